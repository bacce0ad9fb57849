"""One exception handler: DomainError and DRF errors become ``{"error": {...}}``."""

from __future__ import annotations

from django.http import Http404
from rest_framework import exceptions as drf_exc
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_handler

from annotations.errors import DomainError


def exception_handler(exc, context):
    if isinstance(exc, DomainError):
        response = Response({"error": exc.as_dict()}, status=exc.status)
        if isinstance(exc.detail, dict) and "retry_after_seconds" in exc.detail:
            response["Retry-After"] = str(exc.detail["retry_after_seconds"])  # 429s
        return response
    if isinstance(exc, Http404):
        exc = drf_exc.NotFound()
    response = drf_handler(exc, context)
    if response is None:
        return None
    code = getattr(exc, "default_code", "error")
    if isinstance(exc, drf_exc.ValidationError):
        body = {"code": "invalid", "message": "invalid input", "detail": response.data}
    else:
        detail = response.data.get("detail") if isinstance(response.data, dict) else None
        body = {"code": code, "message": str(detail or exc)}
    response.data = {"error": body}
    return response
