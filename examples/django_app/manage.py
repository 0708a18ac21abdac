#!/usr/bin/env python
"""The product guide's "Pattern 2: Django Integration" on pdftasks' job API.

    cd examples/django_app
    REDIS_HOST=localhost PDF_TEMPLATES_DIR=../../templates python manage.py runserver --noreload

(--noreload: the autoreloader would import the app twice and start the workers twice.)
"""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pdfsite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
