"""Progress as a contract: one event type, passed to callbacks in a process and across the process boundary.

Every long task (segmentation's ensemble prediction, the cohort batch, the training loop,
leave-one-out, cross-validation) calls a :data:`ProgressFn` with :class:`ProgressEvent` values;
work made of parts passes each part :func:`part` of its own callback, so ``fraction`` is always
that of the whole task. ``lvmyoseg ... --progress-lines`` prints each event as one line,
``PROGRESS `` followed by the event as a JSON object (fields that are None left out), e.g.
``PROGRESS {"fraction": 0.5, "message": "member 1/2, cnn epoch 3/6", "kind": "epoch", ...}``;
:func:`read_progress_line` turns such a line back into the event (None for any other line).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PROGRESS_PREFIX = "PROGRESS "


@dataclass(frozen=True)
class ProgressEvent:
    """How far a task is: ``fraction`` (0 to 1) of the whole task and the text to show, ``message``.

    The other fields say more where the emitter knows it: ``kind`` is what just ended
    ("batch" or "epoch" of training, "slices" of a prediction, "study" of a cohort);
    ``eta_s`` the seconds until ``fraction`` reaches 1; training adds its ``stage`` ("cnn" or
    "rnn"), the network ``variant``, the 1-based ``epoch`` of ``epochs``, the epoch's mean
    ``loss`` and validation DSC (``val_dsc``), the 0-based ``member`` of ``members`` and ``fold``
    of ``folds``; ``case`` is what a fold holds out, or the study a cohort just finished.
    """

    fraction: float
    message: str
    kind: str | None = None
    eta_s: float | None = None
    stage: str | None = None
    variant: str | None = None
    epoch: int | None = None
    epochs: int | None = None
    loss: float | None = None
    val_dsc: float | None = None
    member: int | None = None
    members: int | None = None
    fold: int | None = None
    folds: int | None = None
    case: str | None = None


ProgressFn = Callable[[ProgressEvent], None]
CancelFn = Callable[[], bool]  # polled by long tasks: True stops them with CancelledError


def part(progress: ProgressFn | None, start: float, share: float, label: str = "",
         **fields: Any) -> ProgressFn | None:
    """The callback for a part of a task that ``progress`` follows: the part's fractions map onto
    ``start`` to ``start + share`` of the task, ``label`` goes before each message (``"label, message"``)
    and ``fields`` are set. The part's ``eta_s`` is dropped: it is not the task's."""
    if progress is None:
        return None

    def forward(event: ProgressEvent) -> None:
        progress(dataclasses.replace(event, fraction=start + share * event.fraction, eta_s=None,
                                     message=f"{label}, {event.message}" if label else event.message,
                                     **fields))

    return forward


def with_measured_eta(progress: ProgressFn, clock: Callable[[], float] = time.monotonic) -> ProgressFn:
    """``progress`` with each event's ``eta_s`` measured: the time since the first event over the
    fraction done since then, times the fraction left (None until the fraction has moved, so the
    work a resumed task skips does not count as fast)."""
    first: list[tuple[float, float]] = []

    def forward(event: ProgressEvent) -> None:
        now = clock()
        if not first:
            first.append((now, event.fraction))
        t0, f0 = first[0]
        eta = (now - t0) * (1.0 - event.fraction) / (event.fraction - f0) if event.fraction > f0 else None
        progress(dataclasses.replace(event, eta_s=eta))

    return forward


def progress_line(event: ProgressEvent) -> str:
    """The line ``--progress-lines`` prints for ``event``: the prefix and the event as JSON."""
    fields = {k: v for k, v in dataclasses.asdict(event).items() if v is not None}
    return PROGRESS_PREFIX + json.dumps(fields)


def read_progress_line(line: str) -> ProgressEvent | None:
    """The event of a :func:`progress_line`; None for any other line (a log line, a damaged event)."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    try:
        event = ProgressEvent(**json.loads(line[len(PROGRESS_PREFIX):]))
    except (ValueError, TypeError):  # not JSON, not an object, unknown or missing fields
        return None
    if isinstance(event.fraction, bool) or not isinstance(event.fraction, (int, float)) \
            or not math.isfinite(event.fraction) or not isinstance(event.message, str):
        return None
    return event
