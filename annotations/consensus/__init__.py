"""Pure consensus engine: fuse several readers' boxes into one read per image.

No Django here.  Strategies register themselves by name (see ``registry``);
importing this package imports every strategy module so they are available::

    from annotations.consensus import build
    results = build("wbf", {"iou_thr": 0.4}).run(images)
"""

from annotations.consensus import (  # noqa: F401  (importing registers the strategies)
    majority,
    priority,
    reader_model,
    reader_weighted,
    wbf,
)
from annotations.consensus.registry import Strategy, available, build, get_strategy, register
from annotations.consensus.types import ConsensusResult, ImageReads, ReaderRead

__all__ = [
    "ConsensusResult",
    "ImageReads",
    "ReaderRead",
    "Strategy",
    "available",
    "build",
    "get_strategy",
    "register",
]
