"""Class names are stored under codes: every path that builds a taxonomy refuses names that
would collide there (the API, the web form, commands and imports all build through here)."""

from __future__ import annotations

import pytest

from annotations.errors import DomainError
from annotations.taxonomy import build_taxonomy


@pytest.mark.parametrize("names", [["a b", "a_b"], ["?"], ["Mass", "mass"], ["No-finding"]])
def test_names_that_collide_as_codes_are_refused(names):
    with pytest.raises(DomainError) as err:
        build_taxonomy(names)
    assert err.value.code == "invalid_taxonomy"


def test_distinct_names_keep_their_order_and_get_no_finding():
    specs = build_taxonomy(["Nodule/Mass", "Pleural effusion"])
    assert [s.name for s in specs] == ["Nodule/Mass", "Pleural effusion", "No finding"]
    assert len({s.code for s in specs}) == 3
