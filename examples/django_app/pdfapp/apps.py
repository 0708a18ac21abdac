from django.apps import AppConfig


class PdfAppConfig(AppConfig):
    name = "pdfapp"

    def ready(self):
        """Start the queue manager (and its local workers) on app startup, as in the guide."""
        from .services import PDFQueueService

        PDFQueueService.get_instance()
