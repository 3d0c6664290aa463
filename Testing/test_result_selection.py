"""The module's reactions to result selection and threshold changes (LVMyoSegLib.app.result_selection)."""

from __future__ import annotations

import pytest

from LVMyoSegLib.app.result_selection import Action, ResultState, react

A, B = "vtkMRMLSequenceNode1", "vtkMRMLSequenceNode2"


@pytest.mark.parametrize("previous, current, stored, action", [
    # picking result B (derived at 0.7) while the slider shows A's 0.5: show B's threshold, re-threshold nothing
    (ResultState(A, 0.5), ResultState(B, 0.5), 0.7, Action.SHOW_RESULT_THRESHOLD),
    # B selected and its threshold shown in the same change: nothing at all
    (ResultState(A, 0.5), ResultState(B, 0.7), 0.7, Action.NOTHING),
    # the slider moved on the same result: re-threshold it (the widget asks first when it holds edits)
    (ResultState(A, 0.5), ResultState(A, 0.6), 0.5, Action.RETHRESHOLD),
    # the slider set back to the result's own threshold (after a declined confirmation): nothing
    (ResultState(A, 0.6), ResultState(A, 0.5), 0.5, Action.NOTHING),
    # another parameter changed (threshold unchanged): nothing, even if the result was derived otherwise
    (ResultState(A, 0.6), ResultState(A, 0.6), 0.5, Action.NOTHING),
    # no result selected, or one without a recorded threshold: nothing
    (ResultState(A, 0.5), ResultState(None, 0.6), None, Action.NOTHING),
    (ResultState(None, 0.5), ResultState(A, 0.6), None, Action.NOTHING),
])
def test_reaction(previous, current, stored, action):
    assert react(previous, current, stored) is action


def test_the_previous_result_is_never_re_thresholded_when_another_is_picked():
    """The old defect: the widget's slot wrote the new result's threshold before the node knew the
    new result, so the previous result was re-thresholded at the new value. By state, a change of
    result never yields RETHRESHOLD, whatever the thresholds."""
    for old_threshold in (0.1, 0.5, 0.9):
        for new_threshold in (0.1, 0.5, 0.9):
            for stored in (0.2, 0.5, 0.8):
                action = react(ResultState(A, old_threshold), ResultState(B, new_threshold), stored)
                assert action is not Action.RETHRESHOLD
