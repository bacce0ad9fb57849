"""Celery application: queues ``default``, ``ingest`` and ``gpu``.

With no broker configured (the embedded default) every task runs eagerly in
the calling process, so the same code paths run in a zero-service setup.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cxr_platform.settings")

app = Celery("cxr_platform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
