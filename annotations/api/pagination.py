"""The API's one pagination: DRF's limit/offset, with the limit capped.

Uncapped, ``?limit=`` reaches the database as ``LIMIT`` and a number past what
PostgreSQL's bigint holds is a 500; a limit above ``max_limit`` is served as
``max_limit`` (DRF's cutoff), and an offset past the end is an empty page.
"""

from __future__ import annotations

from rest_framework.pagination import LimitOffsetPagination


class LimitOffsetCapped(LimitOffsetPagination):
    max_limit = 1000
