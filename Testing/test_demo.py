"""README command 1: the demo segments the bundled real sample with the bundled ensemble.

The sample (Sunnybrook SCD0000101) is a training patient of the bundled model, so this is a
sanity check of the shipped path, not a result: the results are the leave-one-out table.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from LVMyoSegLib.bundle import verify_bundle
from LVMyoSegLib.cli import main
from LVMyoSegLib.dataset import read_case
from LVMyoSegLib.evaluation import evaluate_case
from LVMyoSegLib.resources import SAMPLE_DIR, bundled_model_dir, sample_case_dir
from LVMyoSegLib.volume_files import read_labels_4d

pytestmark = pytest.mark.slow


def test_bundled_model_is_intact_and_small() -> None:
    manifest = verify_bundle(bundled_model_dir())
    assert manifest.variant == "multi_level"
    total = sum(p.stat().st_size for p in bundled_model_dir().iterdir())
    assert total < 30 * 2**20


def test_demo_output_is_aligned_and_matches_the_expert(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out)]) == 0
    case = read_case(SAMPLE_DIR, "SCD0000101")
    labels = read_labels_4d(out / "labels.nrrd", case.cine)  # refuses a misaligned file
    records = evaluate_case(labels, case.labels, case.cine.geometry, "SCD0000101")
    myo = [r["dsc"] for r in records if r["channel"] == "myocardium"]
    assert len(myo) == 9
    assert np.mean(myo) >= 0.80, f"myocardium DSC on the expert-labelled frames {np.mean(myo):.3f}"
    report = json.loads((out / "report.json").read_text())
    function = report["cardiac_function"]
    assert 0 < function["ef_percent"] < 80 and function["edv_ml"] > function["esv_ml"] > 0
    for name in ("overlay.png", "volume_curve.png", "wall_thickness.png",
                 "probabilities_myocardium.nrrd", "probabilities_blood_pool.nrrd"):
        assert (out / name).stat().st_size > 0


def test_rv_insertion_point_numbers_the_thickness_as_aha_segments(tmp_path: Path) -> None:
    """`segment --rv-insertion X Y Z` (LPS mm) with the bundled model: report.json records the
    point and its wall thickness comes in AHA segments (1-16)."""
    case = read_case(SAMPLE_DIR, "SCD0000101")
    g = case.cine.geometry
    lps = g.index_to_lps() @ np.array([60.0, 70.0, 5.0, 1.0])  # a point in the image plane of slice 5
    out = tmp_path / "seg"
    point = [f"{v:.3f}" for v in lps[:3]]
    assert main(["segment", str(sample_case_dir() / "cine.nrrd"), "-o", str(out),
                 "--members", "1", "--no-overlay", "--rv-insertion", *point]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["rv_insertion_lps_mm"] == pytest.approx([float(v) for v in point])
    function = report["cardiac_function"]
    assert function["thickness_reference"] == "aha"
    segments = {sec["aha_segment"] for s in function["thickness"] for sec in s["sectors"]}
    assert segments <= set(range(1, 17)) and len(segments) >= 12
