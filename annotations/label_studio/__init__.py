"""Label Studio integration, pure (no Django): shared by the platform and the ML backend.

Modules, imported directly (this package imports nothing eagerly, so the ML backend can
use ``regions`` without pulling in the SDK):

* ``regions``: THE percent <-> pixel box mapping and result parsing/building.
* ``config``: labeling-config XML generated from a taxonomy, and its validator.
* ``client``: ``LabelStudioClient``, timeouts + retries + ``DomainError`` mapping.
* ``server``: ``LabelStudioServer``, a local server started from the migrated template
  that ``scripts/install_label_studio`` builds (tests and the ``run`` command).
"""
