import pytest

from annotations.errors import DomainError


@pytest.fixture(scope="session")
def vinbigdata_images():
    """The VinBigData training reads (downloaded once into the cache)."""
    from annotations.formats.vinbigdata import parse_csv
    from annotations.public_data import VINBIGDATA_CSV, read_text

    try:
        return parse_csv(read_text(VINBIGDATA_CSV))
    except DomainError as exc:  # offline machine
        pytest.skip(f"VinBigData CSV unavailable: {exc.message}")
