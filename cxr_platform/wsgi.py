"""WSGI entry point (gunicorn ``cxr_platform.wsgi:application``)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cxr_platform.settings")
application = get_wsgi_application()
