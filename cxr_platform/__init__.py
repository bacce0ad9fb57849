"""Django project package of the chest X-ray annotation platform.

Named ``cxr_platform`` rather than ``platform``: a top-level package called
``platform`` would shadow Python's standard-library module of that name, which
``uuid``, Django, Celery and torch import.
"""

from cxr_platform.celery import app as celery_app

__all__ = ["celery_app"]
