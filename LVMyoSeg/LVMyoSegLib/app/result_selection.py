"""How LV Myocardium Segmentation reacts to its parameter node: the shown result and the threshold.

The widget observes the parameter node and passes the state before and after each change to
:func:`react`. Reacting to the node (old value against new), not to widget signals, makes the
order in which Qt delivers signals irrelevant:

- Another result selected: the slider shows that result's own threshold. Nothing is
  re-thresholded, neither the new result nor the one shown before.
- The threshold moved while the same result stays selected: that result is re-derived from its
  probabilities, but only after the user agrees when they edited slices; if they decline, the
  slider goes back to the result's threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class ResultState:
    """What the reaction depends on: the selected result (its node id, or None) and the threshold."""

    result_id: str | None
    threshold: float


class Action(Enum):
    NOTHING = "nothing"
    SHOW_RESULT_THRESHOLD = "show the result's threshold"  # set the threshold to the result's own
    RETHRESHOLD = "re-threshold the result"  # with consent when it holds edits


TOLERANCE = 1e-6


def react(previous: ResultState, current: ResultState, result_threshold: float | None) -> Action:
    """The action for a change from ``previous`` to ``current``; ``result_threshold`` is the
    threshold the current result was last derived with (None: no result, or not known)."""
    if current.result_id is None or result_threshold is None:
        return Action.NOTHING
    matches = abs(current.threshold - result_threshold) < TOLERANCE
    if current.result_id != previous.result_id:
        return Action.NOTHING if matches else Action.SHOW_RESULT_THRESHOLD
    if matches or abs(current.threshold - previous.threshold) < TOLERANCE:
        return Action.NOTHING
    return Action.RETHRESHOLD
