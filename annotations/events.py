"""Domain events: what a service did, said once, for whoever reacts to it.

Services emit events and never call each other's workflows or enqueue tasks; the
reactions live in one module, ``annotations.handlers``, which reads as the pipeline
(reads completed -> consensus -> adjudication or final -> retrain due -> train ->
evaluate -> promote -> pre-label -> push).  That keeps the service modules free of
import cycles and puts every "what happens next" where it can be read in one place.

Delivery is synchronous and in process: ``emit`` calls each subscriber at once, in
the emitter's database transaction.  That is deliberate: a reaction that writes (a
consensus run for completed reads, a promotion for a trained model) commits or rolls
back together with the fact that caused it, so a crash between the two can never
leave the fact without its consequence.  Reactions that leave the process (a Celery
task, Label Studio) are deferred by their handler to ``transaction.on_commit``; a
message lost after the commit is found again by the runs sweep (a pending run whose
message never arrived is queued again).

Pure module: no Django, so a pure package may name an event without importing it.
"""

from __future__ import annotations

import contextvars
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """Base of every domain event: ids, never model instances (an event may outlive
    the transaction that built the rows, and a handler reads what it needs)."""


@dataclass(frozen=True)
class ReadsCompleted(Event):
    """Every reader assigned to these images has finished them (completed or skipped)."""

    project_id: int
    image_ids: tuple[int, ...]


@dataclass(frozen=True)
class RunCreated(Event):
    """A background run (``kind``: consensus, prelabel, training, reconcile) was created.

    ``dispatch`` False: its creator executes it in this process (a management
    command that waits), so no worker message is sent.
    """

    kind: str
    run_id: int
    project_id: int | None  # None: a platform-wide run (reconcile)
    dispatch: bool = True


@dataclass(frozen=True)
class RunRequeued(Event):
    """The sweep gave a lost or never-started run back to the queue."""

    kind: str
    run_id: int


@dataclass(frozen=True)
class RunFinished(Event):
    """A run reached a final state (done, failed, cancelled)."""

    kind: str
    run_id: int
    project_id: int | None
    status: str


@dataclass(frozen=True)
class ModelTrained(Event):
    """A training registered a new model version; ``evaluated``: it has gold metrics."""

    version_id: int
    project_id: int
    evaluated: bool


@dataclass(frozen=True)
class ModelPromoted(Event):
    """A version now serves its project (automatic, forced or a rollback)."""

    version_id: int
    project_id: int


@dataclass(frozen=True)
class AssignmentsCreated(Event):
    """Images were assigned to readers (k per image)."""

    project_id: int
    image_ids: tuple[int, ...]


@dataclass(frozen=True)
class ExplanationsEnabled(Event):
    """A project turned its explanation overlays on: its workspaces need the control."""

    project_id: int


@dataclass(frozen=True)
class WebhookStored(Event):
    """A Label Studio webhook passed the door and was stored for processing
    (``retry``: the webhook sweep found it still pending)."""

    event_id: int
    retry: bool = False


@dataclass(frozen=True)
class BatchCreated(Event):
    """An ingest batch staged its files (``dispatch`` as for ``RunCreated``)."""

    batch_id: int
    project_id: int
    item_ids: tuple[int, ...]
    dispatch: bool = True


@dataclass(frozen=True)
class IngestItemsRequeued(Event):
    """The sweep gave the still-pending files of a stalled batch back to the queue."""

    batch_id: int
    item_ids: tuple[int, ...]


E = TypeVar("E", bound=Event)
Handler = Callable[[E], None]

_subscribers: dict[type[Event], list[Callable[[Event], None]]] = defaultdict(list)


def subscribe(*kinds: type[Event]) -> Callable[[Handler], Handler]:
    """Decorator: call the function with every event of these kinds (idempotent, so a
    module imported twice does not react twice)."""
    def register(fn: Handler) -> Handler:
        for kind in kinds:
            if fn not in _subscribers[kind]:
                _subscribers[kind].append(fn)
        return fn
    return register


def subscribers(kind: type[Event]) -> list[Callable[[Event], None]]:
    """Who reacts to ``kind``, in the order they subscribed (for tests and docs)."""
    return list(_subscribers.get(kind, ()))


def emit(event: Event) -> None:
    """Call every subscriber of the event's kind now, in order (or, inside
    ``coalesced`` for this kind, once the block ends).

    A subscriber's error propagates to the emitter, exactly as if the emitter had
    called it: the emitter's transaction rolls back and nothing half-happened.
    Subscribers that must not fail their emitter catch their own errors.
    """
    held = _held.get()
    if held is not None and type(event) in held:
        held[type(event)].append(event)
        return
    _deliver(event)


def _deliver(event: Event) -> None:
    for fn in _subscribers.get(type(event), ()):
        logger.debug("event %s -> %s", type(event).__name__, fn.__qualname__)
        fn(event)


#: Events of these kinds emitted inside ``coalesced`` wait here, per kind.
_held: contextvars.ContextVar[dict[type[Event], list[Event]] | None] = \
    contextvars.ContextVar("held_events", default=None)


def merge_reads_completed(events: list[ReadsCompleted]) -> list[ReadsCompleted]:
    """One ``ReadsCompleted`` per project, for every image any of ``events`` named."""
    by_project: dict[int, set[int]] = defaultdict(set)
    for e in events:
        by_project[e.project_id].update(e.image_ids)
    return [ReadsCompleted(project_id=p, image_ids=tuple(sorted(ids)))
            for p, ids in sorted(by_project.items())]


#: How the events of a kind held by ``coalesced`` become the ones delivered.
MERGE: dict[type[Event], Callable[[list], list]] = {ReadsCompleted: merge_reads_completed}


@contextmanager
def coalesced(*kinds: type[Event]) -> Iterator[None]:
    """Hold the events of ``kinds`` emitted in the block and deliver them merged
    (``MERGE``) when it ends; if it raises, they are dropped with it.

    Why: a reconcile pass that stores thousands of missed reads would otherwise
    start one consensus run per image; merged, a batch of images gets one run.
    The caller wraps the block in its database transaction, so the reactions still
    commit or roll back with their causes (the module's promise).  An event emitted in
    a savepoint that is rolled back and caught inside the block is still delivered:
    emit last in a savepoint (as ``reader_annotation_record`` does), or not at all.
    """
    outer = _held.get()
    held = {**(outer or {}), **{k: [] for k in kinds if not outer or k not in outer}}
    token = _held.set(held)
    try:
        yield
    finally:
        _held.reset(token)
    for kind in kinds:
        if outer is not None and kind in outer:
            continue  # an enclosing block holds this kind: it delivers them
        for event in MERGE.get(kind, list)(held[kind]):
            emit(event)
