"""Outputs respect the user's umask, as other tools do (issue 17, item 10): no 0600 files or 0700
folders where the umask allows more, and no more than the umask allows."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from LVMyoSegLib.io.dataset import add_case
from LVMyoSegLib.io.phantom import make_synthetic_cine
from LVMyoSegLib.io.volume_files import write_4d
from LVMyoSegLib.reporting.figures import overlay_montage


@pytest.fixture(params=[0o022, 0o027], ids=["umask022", "umask027"])
def mask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def test_volumes_figures_datasets_and_bundles_follow_the_umask(tmp_path, mask) -> None:
    from LVMyoSegLib.labels import CHANNELS
    from LVMyoSegLib.model.bundle import write_bundle
    from LVMyoSegLib.model.networks import build_cnn, build_model

    cine, labels = make_synthetic_cine(n_phases=4, n_slices=2, size=48, seed=1)
    out = tmp_path / "out"
    out.mkdir()
    os.chmod(out, 0o777 & ~mask)
    write_4d(out / "labels.nrrd", labels.label_map, cine.geometry, cine.trigger_times_ms, kind="labels")
    write_4d(out / "probabilities.nii.gz", (labels.label_map == 1).astype("float32"), cine.geometry,
             cine.trigger_times_ms, kind="probabilities")
    overlay_montage(cine, labels.label_map, [0, 1], out / "overlay.png")
    add_case(out / "dataset", "case1", cine, labels)
    write_bundle(out / "bundle", [build_model("multi_level", build_cnn(crop_size=32, width=2, units=1))],
                 model_id="b", variant="multi_level", channels=CHANNELS,
                 preprocessing={"pixel_mm": 2.0, "crop_size": 32})
    found = modes(out)
    want_file, want_dir = 0o666 & ~mask, 0o777 & ~mask
    wrong = {name: oct(m) for name, m in found.items()
             if m != (want_dir if (out / name).is_dir() or name == "." else want_file)}
    assert not wrong, f"umask {oct(mask)}: {wrong}"
    assert {"labels.nrrd", "overlay.png", "dataset/dataset.json", "dataset/cases/case1",
            "bundle", "bundle/member_0.keras"} <= set(found)
