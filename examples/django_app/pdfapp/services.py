"""The guide's singleton: the imports changed, a stop() for shutdown, and workers started
without Django's settings."""

import atexit
import os

from django.conf import settings

from pdftasks import PDFQueueManager, PDFService, PDFServiceConfig, RedisBackend


class PDFQueueService:
    """Singleton PDF queue service for Django."""

    _instance = None

    @classmethod
    def get_instance(cls):
        if cls._instance is None:
            backend = RedisBackend(
                host=settings.REDIS_HOST,
                port=settings.REDIS_PORT,
                queue_name="django_pdf_queue",
            )
            config = PDFServiceConfig(
                templates_dir=settings.PDF_TEMPLATES_DIR,
                output_dir=settings.PDF_OUTPUT_DIR,
            )
            pdf_service = PDFService(config)
            cls._instance = PDFQueueManager(
                backend=backend,
                pdf_service=pdf_service,
                num_workers=settings.PDF_WORKERS,
            )
            # The workers render PDFs and need no Django. Without DJANGO_SETTINGS_MODULE,
            # Celery's Django fix-up stays off in them: it would set this project up in each
            # worker, and this app's ready() would start workers from the workers.
            saved = os.environ.pop("DJANGO_SETTINGS_MODULE", None)
            try:
                cls._instance.start()
            finally:
                if saved is not None:
                    os.environ["DJANGO_SETTINGS_MODULE"] = saved
            atexit.register(cls.stop)
        return cls._instance

    @classmethod
    def stop(cls):
        if cls._instance is not None:
            cls._instance.stop()
            cls._instance = None
