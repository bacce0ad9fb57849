"""Upload size limits, enforced while the request body streams in.

Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` bounds form fields and
``FILE_UPLOAD_MAX_MEMORY_SIZE`` only decides when an upload spills to a
temporary file: neither caps how many bytes a client may send.  This handler
runs first among ``FILE_UPLOAD_HANDLERS`` and counts every chunk as the
multipart parser reads it, so an oversized upload is refused (413) after at
most one chunk past the limit, before it fills the disk or the staging area,
and before any view or service sees it.  A declared ``Content-Length`` above
the request limit is refused before the body is read at all.

Limits come from settings at request time:

* per file: ``UPLOAD_MAX_FILE_BYTES``, or the setting a view names in its
  ``upload_max_file_setting`` attribute (Quick read: ``QUICK_READ_MAX_BYTES``;
  annotation imports: ``IMPORT_MAX_BYTES``);
* per request: ``UPLOAD_MAX_REQUEST_BYTES`` (all files together).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.files.uploadhandler import FileUploadHandler

from annotations.errors import DomainError

MIB = 1024 * 1024
#: Room for multipart framing and form fields on top of the request limit
#: when judging a declared Content-Length.
FRAMING_BYTES = 1 * MIB


class UploadTooLarge(DomainError, RequestDataTooBig):
    """A ``DomainError`` (the API maps it to 413) that Django's own request
    handling also understands (``RequestDataTooBig``: a 400, never a 500) when
    the body is parsed outside an API view."""

    def __init__(self, message: str) -> None:
        super().__init__("too_large", message, status=413)


def _size(n: int) -> str:
    return f"{n / MIB:g} MiB" if n >= MIB else f"{n} bytes"


def upload_limits(request: Any) -> tuple[int, int]:
    """(per-file, per-request) byte limits for the view this request goes to."""
    match = getattr(request, "resolver_match", None)
    view_class = getattr(getattr(match, "func", None), "view_class", None)
    setting = getattr(view_class, "upload_max_file_setting", "UPLOAD_MAX_FILE_BYTES")
    return int(getattr(settings, setting)), int(settings.UPLOAD_MAX_REQUEST_BYTES)


class LimitedUploadHandler(FileUploadHandler):
    """Counts bytes per file and per request; passes every chunk on unchanged."""

    def __init__(self, request: Any = None) -> None:
        super().__init__(request)
        self.max_file, self.max_request = upload_limits(request)
        self.file_bytes = 0
        self.request_bytes = 0

    def handle_raw_input(self, input_data, META, content_length, boundary,
                         encoding=None) -> None:
        if content_length and content_length > self.max_request + FRAMING_BYTES:
            raise UploadTooLarge(f"the request is larger than {_size(self.max_request)}")

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.file_bytes = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.file_bytes += len(raw_data)
        self.request_bytes += len(raw_data)
        if self.file_bytes > self.max_file:
            raise UploadTooLarge(f"a file is larger than {_size(self.max_file)}")
        if self.request_bytes > self.max_request:
            raise UploadTooLarge(f"the files of this request are larger than "
                                 f"{_size(self.max_request)} together")
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None  # the next handler builds the file
