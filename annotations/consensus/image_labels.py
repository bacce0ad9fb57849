"""The image-level rule shared by every strategy: when is an image "No finding"?

Readers disagree at image level when some draw boxes and others say
"No finding".  The consensus follows its boxes, never a vote on labels:

* at least one consensus box survives  -> the image is abnormal (no labels);
* no consensus box survives and at least one reader read the image
  -> ``{"No finding"}`` (nothing abnormal was agreed upon, even if a lone
  reader drew boxes the strategy rejected);
* nobody read the image -> no labels (undetermined).

So a surviving box always removes "No finding", and "No finding" never
coexists with boxes.  Image-level findings that the readers agree on
(``image_findings``) remove it too.  How many readers voted "No finding" is kept in
``meta["no_finding_votes"]`` for audit.
"""

from __future__ import annotations

from annotations.taxonomy import NO_FINDING

NO_FINDING_LABELS = frozenset({NO_FINDING})


def consensus_image_labels(n_consensus_boxes: int, n_reads: int) -> frozenset[str]:
    if n_consensus_boxes > 0 or n_reads == 0:
        return frozenset()
    return NO_FINDING_LABELS
