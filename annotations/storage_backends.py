"""The embedded default store: Django's FileSystemStorage, made safe for our files.

Two differences from the stock class, each for a reason the stock class cannot meet:

* Writes are atomic (a temporary name in the destination folder, then ``os.replace``):
  a crash never leaves a half-written derivative that a database row points to, and a
  key written again (a content-addressed mask, a retried upload) is overwritten, never
  renamed to ``name_XYZ`` the way ``get_available_name`` would.
* The root is a settings name read on each use (``MEDIA_ROOT``, ``STAGING_ROOT``...), so
  the folder follows the settings (tests move it per test) instead of being frozen when
  the store was first built.

``private`` stores (quarantined originals carry identity) keep 0700 folders and 0600
files, readable by the platform's own user only.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.storage import FileSystemStorage


class LocalStorage(FileSystemStorage):
    """A folder named by a setting; atomic, overwriting writes."""

    def __init__(self, root_setting: str = "MEDIA_ROOT", private: bool = False,
                 **kwargs: Any) -> None:
        self.root_setting = root_setting
        self.private = private
        super().__init__(**kwargs)

    @property
    def base_location(self) -> str:  # type: ignore[override]
        return str(getattr(settings, self.root_setting))

    @property
    def location(self) -> str:  # type: ignore[override]
        return os.path.abspath(self.base_location)

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        return name  # keys are chosen by the platform; writing one again overwrites it

    def _save(self, name: str, content: Any) -> str:
        path = Path(self.path(name))
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.private:
            folder = path.parent
            while True:
                os.chmod(folder, 0o700)
                if folder == Path(self.location) or folder == folder.parent:
                    break
                folder = folder.parent
        # mkstemp's file is 0600: private to the platform's user, as every stored file is
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
        try:
            with os.fdopen(fd, "wb") as fh:
                if hasattr(content, "chunks"):
                    for chunk in content.chunks():
                        fh.write(chunk)
                else:
                    fh.write(content.read())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return name
