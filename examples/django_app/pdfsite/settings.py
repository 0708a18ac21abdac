"""Minimal settings for the example project; the PDF_* and REDIS_* ones are the guide's."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.getenv("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.getenv("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
INSTALLED_APPS = ["pdfapp.apps.PdfAppConfig"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "pdfsite.urls"
DATABASES: dict = {}
USE_TZ = True

REDIS_HOST = os.getenv("REDIS_HOST", "localhost")
REDIS_PORT = int(os.getenv("REDIS_PORT", "6379"))
PDF_TEMPLATES_DIR = os.getenv("PDF_TEMPLATES_DIR", str(BASE_DIR / "templates"))
PDF_OUTPUT_DIR = os.getenv("PDF_OUTPUT_DIR", str(BASE_DIR / "output"))
PDF_WORKERS = int(os.getenv("PDF_WORKERS", "2"))
