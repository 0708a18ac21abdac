from django.urls import path

from . import views

urlpatterns = [
    path("pdf", views.generate_pdf),
    path("pdf/<str:job_id>", views.pdf_status),
    path("pdf/<str:job_id>/download", views.download_pdf),
]
