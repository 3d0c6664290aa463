"""Test-time rotation averaging (model/rotations.py) on a real orientation-dependent function."""

from __future__ import annotations

import numpy as np
import pytest

from LVMyoSegLib.errors import InputError
from LVMyoSegLib.model.rotations import ROTATIONS, check_rotations, rotation_average
from LVMyoSegLib.progress import ProgressEvent


def _directional(view: np.ndarray, progress) -> np.ndarray:
    """Cumulative sum down the rows: depends on which way the image points; 2 output channels."""
    if progress is not None:
        progress(ProgressEvent(1.0, "slices 1-1 of 1"))
    c = np.cumsum(view[..., 0], axis=2)
    return np.stack([c, -c], axis=-1)


def test_views_are_turned_back_and_averaged() -> None:
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 8, 1)).astype(np.float32)
    one = rotation_average(_directional, x, 1)
    assert np.array_equal(one, _directional(x, None))
    for n, turns in ((2, (0, 2)), (4, (0, 1, 2, 3))):
        by_hand = np.mean([np.rot90(_directional(np.rot90(x, k, axes=(2, 3)), None), -k, axes=(2, 3))
                           for k in turns], axis=0)
        got = rotation_average(_directional, x, n)
        assert got.shape == (2, 3, 8, 8, 2) and got.dtype == np.float32
        assert np.allclose(got, by_hand, atol=1e-5) and not np.allclose(got, one, atol=1e-3)
    pointwise = rotation_average(lambda v, _: np.tanh(v), x, 4)  # an orientation-blind network
    assert np.allclose(pointwise, np.tanh(x), atol=1e-6)


def test_progress_covers_every_view_and_bad_counts_are_refused() -> None:
    seen = []
    rotation_average(_directional, np.zeros((1, 1, 4, 4, 1), np.float32), 4, progress=seen.append)
    assert [round(e.fraction, 3) for e in seen] == [0.25, 0.5, 0.75, 1.0]
    assert [e.message.split(",")[0] for e in seen] == [f"view {i} of 4" for i in range(1, 5)]
    assert [check_rotations(n) for n in ROTATIONS] == [1, 2, 4]
    for bad in (0, 3, 8, 2.0, True, "4"):
        with pytest.raises(InputError, match="choose 1 .* 2 .* or 4"):
            check_rotations(bad)
