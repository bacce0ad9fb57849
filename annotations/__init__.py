"""The platform's domain: projects, images, readers, annotations and their services.

Subpackages ``imaging``, ``consensus``, ``formats`` and ``label_studio`` are pure
(numpy/pydicom only, never Django) so that ``training`` and ``ml_backend`` can
use them without a database.  Importing this package imports nothing.
"""
