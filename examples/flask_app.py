"""The product guide's "Pattern 1: Flask REST API", on pdftasks' job API.

    REDIS_HOST=localhost REDIS_PORT=6379 python examples/flask_app.py

Changes from the guide: the imports; ``create_app()`` starts the workers (Flask 2.3 removed
``before_first_request``); an unknown priority or a bad template, file name or data is a
400 with the reason instead of a silent default or a 500; a job that is not ready is a 409.

This pattern trusts its callers: ``X-User-ID`` is recorded as metadata, it proves nothing.
For a service on a network use ``pdftasks api`` (API keys, tenants, idempotency, rate
limits, webhooks; see docs/reference/http-api.md).
"""

from __future__ import annotations

import atexit
import os

from flask import Flask, jsonify, request, send_file

from pdftasks import (
    InvalidJobError,
    JobPriority,
    JobStatus,
    PDFQueueManager,
    PDFService,
    PDFServiceConfig,
    RedisBackend,
)

PRIORITIES = {p.name.lower(): p for p in JobPriority}


def make_manager() -> PDFQueueManager:
    """The guide's manager: Redis from REDIS_HOST/REDIS_PORT, templates and output
    directories from PDFTASKS_TEMPLATES_DIR / PDFTASKS_OUTPUT_DIR."""
    backend = RedisBackend(host=os.getenv("REDIS_HOST", "localhost"),
                           port=int(os.getenv("REDIS_PORT", "6379")),
                           queue_name="pdf_api_queue")
    service = PDFService(PDFServiceConfig.from_env())
    return PDFQueueManager(backend, service, num_workers=int(os.getenv("PDF_WORKERS", "4")))


def create_app(manager: PDFQueueManager | None = None, start_workers: bool = True) -> Flask:
    app = Flask(__name__)
    manager = manager or make_manager()
    if start_workers:
        manager.start()
        atexit.register(manager.stop)
    app.extensions["pdf_manager"] = manager

    @app.route("/api/pdf", methods=["POST"])
    def create_pdf():
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            return jsonify({"error": "Send a JSON object"}), 400
        missing = [k for k in ("template", "data", "filename") if k not in data]
        if missing:
            return jsonify({"error": f"Missing required fields: {', '.join(missing)}"}), 400
        priority = PRIORITIES.get(str(data.get("priority", "normal")).lower())
        if priority is None:
            return jsonify({"error": f"Unknown priority {data.get('priority')!r}: use "
                                     "urgent, high, normal or low"}), 400
        try:
            job_id = manager.submit_job(
                template=data["template"],
                data=data["data"],
                output_filename=data["filename"],
                priority=priority,
                metadata={"user_id": request.headers.get("X-User-ID"),
                          "ip_address": request.remote_addr},
            )
        except InvalidJobError as exc:
            return jsonify({"error": str(exc)}), 400
        return jsonify({"job_id": job_id, "status": "pending",
                        "check_url": f"/api/pdf/{job_id}"}), 202

    @app.route("/api/pdf/<job_id>", methods=["GET"])
    def get_pdf_status(job_id):
        job = manager.get_job(job_id)
        if not job:
            return jsonify({"error": "Job not found"}), 404
        response = {
            "job_id": job.job_id,
            "status": job.status.name.lower(),
            "created_at": job.created_at.isoformat(),
            "priority": job.priority.name.lower(),
        }
        if job.started_at:
            response["started_at"] = job.started_at.isoformat()
        if job.completed_at:
            response["completed_at"] = job.completed_at.isoformat()
            if job.started_at:  # a job cancelled while pending never started
                duration = (job.completed_at - job.started_at).total_seconds()
                response["duration"] = f"{duration:.2f}s"
        if job.status == JobStatus.COMPLETED:
            response["download_url"] = f"/api/pdf/{job_id}/download"
        if job.status == JobStatus.FAILED:
            response["error"] = job.error
            response["retries"] = f"{job.retry_count}/{job.max_retries}"
        return jsonify(response)

    @app.route("/api/pdf/<job_id>/download", methods=["GET"])
    def download_pdf(job_id):
        job = manager.get_job(job_id)
        if not job:
            return jsonify({"error": "Job not found"}), 404
        if job.status != JobStatus.COMPLETED:
            return jsonify({"error": "PDF not ready", "status": job.status.name.lower()}), 409
        return send_file(job.result_path, mimetype="application/pdf", as_attachment=True,
                         download_name=job.output_filename)

    @app.route("/api/pdf/<job_id>", methods=["DELETE"])
    def cancel_pdf(job_id):
        if manager.cancel_job(job_id):
            return jsonify({"message": "Job cancelled"}), 200
        return jsonify({"error": "Cannot cancel job"}), 409

    @app.route("/api/queue/stats", methods=["GET"])
    def queue_stats():
        return jsonify(manager.get_queue_stats())

    @app.route("/api/health", methods=["GET"])
    def health_check():
        stats = manager.get_queue_stats()
        healthy = stats["workers"] > 0
        health = {"status": "healthy" if healthy else "unhealthy",
                  "workers": stats["workers"],
                  "queue_size": stats["pending"] + stats["processing"]}
        return jsonify(health), 200 if healthy else 503

    return app


if __name__ == "__main__":
    create_app().run(host="127.0.0.1", port=5000)
