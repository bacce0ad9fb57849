"""The small supervised loop the classifier and the segmenter share (the detector trains
in Detectron2's own trainer).

Seeded batches of film indices, exposure jitter (films differ in exposure), AdamW with a
cosine schedule, and a progress callback every ``progress_period`` iterations and at the
end, which may raise to stop the training (a cancelled or lost run).  ``make_batch``
turns indices into ``(inputs, targets)``: films are prepared per batch, never all at
once, so a lazy sequence keeps memory to one batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Progress:
    iteration: int
    max_iter: int
    loss: float
    eta_seconds: float | None

    @property
    def fraction(self) -> float:
        return self.iteration / self.max_iter if self.max_iter else 1.0


def generator_for(seed: int | None) -> torch.Generator:
    """The batch sampler's generator (and the weights' seed, when one is given)."""
    if seed is not None:
        torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed if seed is not None else
                                         int(time.time_ns() % 2**31))


def train_loop(model: nn.Module, n: int,
               make_batch: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
               loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *,
               lr: float, max_iter: int, batch_size: int, generator: torch.Generator,
               progress: Callable[[Progress], None] | None = None,
               progress_period: int = 10) -> nn.Module:
    """Train ``model`` on ``n`` examples; returns it in eval mode."""
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(max_iter, 1))
    model.train()
    start = time.monotonic()
    for it in range(1, max_iter + 1):
        batch = torch.randint(n, (min(batch_size, n),), generator=generator)
        xb, yb = make_batch(batch)
        if torch.rand(1, generator=generator).item() < 0.5:  # exposure varies film to film
            xb = xb * (1.0 + 0.2 * (torch.rand(1, generator=generator).item() - 0.5))
        loss = loss_fn(model(xb), yb)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if progress is not None and (it % progress_period == 0 or it == max_iter):
            elapsed = time.monotonic() - start
            progress(Progress(it, max_iter, float(loss.detach()),
                              elapsed / it * (max_iter - it) if it else None))
    return model.eval()
