"""The guide's views with plain Django (no REST framework needed).

Bad input (unknown template, unsafe file name, non-JSON data) is a 400 with the reason.
"""

import json

from django.http import FileResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from pdftasks import InvalidJobError, JobStatus

from .services import PDFQueueService


@csrf_exempt
@require_POST
def generate_pdf(request):
    """Generate PDF endpoint."""
    try:
        body = json.loads(request.body)
        template, data, filename = body["template"], body["data"], body["filename"]
    except (ValueError, TypeError, KeyError) as exc:
        return JsonResponse({"error": f"Send JSON with template, data and filename ({exc})"},
                            status=400)
    queue = PDFQueueService.get_instance()
    user = getattr(request, "user", None)
    try:
        job_id = queue.submit_job(
            template=template,
            data=data,
            output_filename=filename,
            metadata={"user_id": getattr(user, "id", None)},
        )
    except InvalidJobError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse({"job_id": job_id, "status": "pending"}, status=202)


@require_GET
def pdf_status(request, job_id):
    """Check PDF status."""
    job = PDFQueueService.get_instance().get_job(job_id)
    if not job:
        return JsonResponse({"error": "Job not found"}, status=404)
    return JsonResponse({
        "job_id": job.job_id,
        "status": job.status.name.lower(),
        "result_path": job.result_path,
        "error": job.error,
    })


@require_GET
def download_pdf(request, job_id):
    job = PDFQueueService.get_instance().get_job(job_id)
    if not job:
        return JsonResponse({"error": "Job not found"}, status=404)
    if job.status != JobStatus.COMPLETED:
        return JsonResponse({"error": "PDF not ready", "status": job.status.value}, status=409)
    return FileResponse(open(job.result_path, "rb"), as_attachment=True,
                        filename=job.output_filename, content_type="application/pdf")
