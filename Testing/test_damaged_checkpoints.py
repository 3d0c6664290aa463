"""A damaged training checkpoint is named, with how to restart its stage; the run folder is left as it was."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("keras")

from test_output_folder import hashes  # noqa: E402
from test_training import SMALL, synthetic_network_arrays  # noqa: E402

from LVMyoSegLib.errors import CancelledError, InputError  # noqa: E402
from LVMyoSegLib.training import loop as training  # noqa: E402


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A stage-1 run stopped after epoch 1 (its checkpoint is on disk), and its arrays and config."""
    x, y, k = synthetic_network_arrays(n_phases=4, n_slices=3, size=32)
    cfg = training.TrainConfig(epochs=2, frames_per_batch=4, validation_fraction=0.34, augment=False, **SMALL)
    run = tmp_path_factory.mktemp("runs") / "run"
    seen = []
    with pytest.raises(CancelledError):
        training.fit_cnn(x, y, k, run, cfg, progress=seen.append,
                         cancel=lambda: bool(seen) and seen[-1].kind == "epoch")
    assert (run / "checkpoint" / "state.json").is_file()
    return run, (x, y, k), cfg


@pytest.mark.slow
@pytest.mark.parametrize("name, damage", [
    ("model.weights.h5", lambda data: data[: len(data) // 2]),
    ("optimizer.npz", lambda data: data[: len(data) // 3]),
    ("state.json", lambda data: b'{"epoch": 1, "hist'),
])
def test_damaged_checkpoint_names_the_file_and_how_to_restart(interrupted, tmp_path, name, damage) -> None:
    source, arrays, cfg = interrupted
    run = tmp_path / "run"
    shutil.copytree(source, run)
    path = run / "checkpoint" / name
    path.write_bytes(damage(path.read_bytes()))
    before = hashes(run)
    with pytest.raises(InputError) as info:
        training.fit_cnn(*arrays, run, cfg)
    message = str(info.value)
    assert str(path) in message and "is damaged" in message
    assert f"delete the folder {run / 'checkpoint'}" in message and "run the same command again" in message
    assert hashes(run) == before
