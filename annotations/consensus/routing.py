"""Which images an adjudicator should see first, within a budget.

A fixed agreement threshold sends every disputed image and ignores how
likely the consensus is to be wrong: two careful readers against one noisy
reader disagree often and are usually right.  With a probabilistic
consensus (``reader_model``), each image carries ``meta["p_error"]``, the
posterior probability that at least one of its candidate findings was
decided wrongly; spending the budget on the highest values fixes the most
errors per case.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def by_uncertainty(metas: Mapping[str, Mapping[str, Any]], budget: int) -> list[str]:
    """Up to ``budget`` image ids, most likely wrong first, from each image's result
    ``meta`` (images without a ``p_error`` are not ranked: their strategy gives no
    posterior)."""
    ranked = sorted(
        ((float(m["p_error"]), float(m.get("expected_errors", 0.0)), image_id)
         for image_id, m in metas.items() if "p_error" in m),
        key=lambda t: (-t[0], -t[1], t[2]),
    )
    return [image_id for p, _e, image_id in ranked[:max(budget, 0)] if p > 0]
