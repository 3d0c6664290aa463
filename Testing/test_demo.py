"""README command 1: the demo segments the bundled real sample with the bundled ensemble.

The sample (Sunnybrook SCD0000101) is a training patient of the bundled model, so this is a
sanity check of the shipped path, not a result: the results are the leave-one-out table.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from LVMyoSegLib.analysis.evaluation import evaluate_case
from LVMyoSegLib.analysis.function_report import assess
from LVMyoSegLib.cine import Cine, Geometry
from LVMyoSegLib.cli.main import main
from LVMyoSegLib.io.dataset import read_case
from LVMyoSegLib.io.volume_files import read_labels_4d
from LVMyoSegLib.model.bundle import verify_bundle
from LVMyoSegLib.resources import SAMPLE_DIR, bundled_model_dir, sample_case_dir

pytestmark = pytest.mark.slow


def _refuse(name: str):
    raise ValueError(f"report.json holds the non-JSON constant {name}")


def test_bundled_model_is_intact_and_small() -> None:
    """Multi-level, 5 members as the paper, under 30 MB; its manifest carries the held-out figures of
    the 36-heart evaluation: the leave-one-out per variant and the cross-validation summary."""
    manifest = verify_bundle(bundled_model_dir())
    assert manifest.variant == "multi_level" and len(manifest.members) == 5
    total = sum(p.stat().st_size for p in bundled_model_dir().iterdir())
    assert total < 30 * 2**20
    assert {"cnn", "one_level", "multi_level", "cross_validation"} <= set(manifest.metrics)
    assert len(manifest.training["edes_patients"]) >= 30


def test_demo_output_is_aligned_and_matches_the_expert(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out)]) == 0
    case = read_case(SAMPLE_DIR, "SCD0000101")
    labels = read_labels_4d(out / "labels.nrrd", case.cine)  # refuses a misaligned file
    records = evaluate_case(labels, case.labels, case.cine.geometry, "SCD0000101")
    myo = [r["dsc"] for r in records if r["channel"] == "myocardium"]
    assert len(myo) == 9
    assert np.mean(myo) >= 0.80, f"myocardium DSC on the expert-labelled frames {np.mean(myo):.3f}"
    report = json.loads((out / "report.json").read_text(), parse_constant=_refuse)  # strict JSON
    function = report["cardiac_function"]
    assert report["function_withheld"] is None
    assert 0 < function["ef_percent"] < 80 and function["edv_ml"] > function["esv_ml"] > 0
    # The sample is a TRAINING patient of the bundled model: this checks the product's own
    # slice choice (base, atrium, apex per phase) on a known heart, it is not a result.
    # Expert: EF 25.8 %, EDV 195.8 mL, ESV 145.2 mL (slices 1-9 at ED and ES).
    assert abs(function["ef_percent"] - 25.8) <= 5.0, function["ef_percent"]
    assert abs(function["edv_ml"] / 195.8 - 1) <= 0.10 and abs(function["esv_ml"] / 145.2 - 1) <= 0.10
    rows = function["slices"]["rows"]
    for frame in (function["ed_frame"], function["es_frame"]):
        counted = [r["slice"] for r in rows if r["frame"] == frame and r["counted"]]
        # slice 11 cuts the atrium; slice 10, the outflow tract with a partial basal ring, counts
        # only where the segmented myocardium surrounds at least half its blood pool (SCMR rule)
        assert 11 not in counted and {1, 5, 9} <= set(counted)
        row_10 = next(r for r in rows if r["frame"] == frame and r["slice"] == 10)
        assert not row_10["counted"] or row_10["coverage"] >= 0.5, row_10
    assert report["qc"]["review_first"] and len(report["qc"]["review_first"]) <= 10
    _assert_function_ignores_how_the_stack_is_stored(labels, case.cine)
    for name in ("overlay.png", "volume_curve.png", "wall_thickness.png",
                 "probabilities_myocardium.nrrd", "probabilities_blood_pool.nrrd"):
        assert (out / name).stat().st_size > 0


def _assert_function_ignores_how_the_stack_is_stored(label_map: np.ndarray, cine: Cine) -> None:
    """The same segmentation stored apex-first, or with no patient orientation (identity
    direction, as some NIfTI exports), gives the same figures and the same slices: base and
    apex come from the images, not from the header."""
    g, n_z = cine.geometry, cine.n_slices
    as_read = assess(label_map, g, cine.trigger_times_ms).function
    stored = {"apex first": (label_map[:, ::-1], g.reversed_slices(n_z), True),
              "no orientation": (label_map, Geometry(g.spacing, (0, 0, 0)), False),
              "both": (label_map[:, ::-1], Geometry(g.spacing, (0, 0, 0)), True)}
    for name, (lm, geometry, flipped) in stored.items():
        f = assess(lm, geometry, cine.trigger_times_ms).function
        for key in ("edv_ml", "esv_ml", "ef_percent", "lv_mass_g", "ed_frame", "es_frame"):
            assert getattr(f, key) == pytest.approx(getattr(as_read, key), rel=1e-9), (name, key)
        counted = f.slices.counted[:, ::-1] if flipped else f.slices.counted
        assert np.array_equal(counted, as_read.slices.counted), name
        assert f.slices.order_source == "data", name


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


def test_function_withheld_gives_exit_code_3(tmp_path: Path, capsys) -> None:
    """A cine without a heart (noise; a constant image is refused before the network runs): the
    outputs are written, the function values are withheld (null, with the reason), stderr says so
    and the exit code is 3."""
    from LVMyoSegLib.cine import Geometry
    from LVMyoSegLib.io.volume_files import write_4d

    frames = np.random.default_rng(0).uniform(90.0, 110.0, (4, 3, 128, 128)).astype(np.float32)
    path = tmp_path / "flat.nrrd"
    write_4d(path, frames, Geometry((1.5, 1.5, 8.0), (0, 0, 0)), [0, 40, 80, 120], kind="image")
    out = tmp_path / "seg"
    assert main(["segment", str(path), "-o", str(out), "--no-overlay"]) == 3
    assert "cardiac function withheld" in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text(), parse_constant=_refuse)
    assert report["function_withheld"]
    function = report["cardiac_function"]
    assert function is None or function["ef_percent"] is None
