"""Expert-vs-product cardiac function on a real case, and validate-function on a LOO run layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from LVMyoSegLib.cli.main import main
from LVMyoSegLib.io.dataset import read_case
from LVMyoSegLib.io.sunnybrook import cardiac_phases
from LVMyoSegLib.labels import BLOOD_POOL, MYOCARDIUM
from LVMyoSegLib.resources import SAMPLE_DIR
from LVMyoSegLib.training.function_validation import bland_altman, compare_case


def _refuse(name):
    raise ValueError(f"non-strict JSON constant {name}")


def _with_basal_outflow(label_map: np.ndarray, frames) -> np.ndarray:
    """Slice 10 (beyond the expert's base) gets a big blood pool with a short arc of
    'myocardium' on one side, as a network gives in the outflow tract; the cavity-only
    frames get a 3-pixel myocardium ring, as a network gives on every frame."""
    lm = label_map.copy()
    for t in frames:
        if not (lm[t] == MYOCARDIUM).any():
            for z in range(lm.shape[1]):
                pool = lm[t, z] == BLOOD_POOL
                lm[t, z][ndimage.binary_dilation(pool, iterations=3) & ~pool] = MYOCARDIUM
    rr, cc = np.mgrid[:lm.shape[2], :lm.shape[3]]
    r = np.hypot(rr - 80, cc - 80)
    for t in frames:
        lm[t, 10][r < 25] = BLOOD_POOL
        lm[t, 10][(r >= 25) & (r < 31) & (cc > 95)] = MYOCARDIUM
    return lm


def test_product_and_expert_slices_figures() -> None:
    case = read_case(SAMPLE_DIR, "SCD0000101")
    ed, es = cardiac_phases(case.labels)
    assert (ed, es) == (18, 7)  # the data README's phases 19 and 8, 1-based
    same = compare_case(case.labels, case.labels.label_map.copy(), case.cine.geometry, "same")
    for key in ("edv_ml", "esv_ml", "ef_percent", "lv_mass_g"):
        assert same["own"][key] == pytest.approx(same["expert"][key])
        assert same["expert_slices"][key] == pytest.approx(same["expert"][key])
    assert same["expert"]["ef_percent"] == pytest.approx(25.8, abs=0.1)
    assert same["own_slices"] == {"ed": "1-9", "es": "1-9"}
    assert all(r["dsc"] == 1.0 for r in same["qc"]) and len(same["qc"]) == 9
    # An automatic cavity one pixel larger all round has a larger EDV and ESV.
    grown = case.labels.label_map.copy()
    for t in (ed, es):
        for z in range(grown.shape[1]):
            grown[t, z][ndimage.binary_dilation(grown[t, z] == BLOOD_POOL)] = BLOOD_POOL
    big = compare_case(case.labels, grown, case.cine.geometry, "grown")
    for which in ("own", "expert_slices"):
        assert big[which]["edv_ml"] > 1.03 * big["expert"]["edv_ml"]
        assert big[which]["esv_ml"] > 1.03 * big["expert"]["esv_ml"]
    # An outflow-tract slice beyond the base: the product's own slice choice leaves it out.
    extra = compare_case(case.labels, _with_basal_outflow(case.labels.label_map, (ed, es)),
                         case.cine.geometry, "outflow")
    assert extra["own"]["edv_ml"] == pytest.approx(same["own"]["edv_ml"])
    assert extra["own_slices"] == {"ed": "1-9", "es": "1-9"}


def test_bland_altman_limits() -> None:
    s = bland_altman([10.0, 20.0, 30.0], [11.0, 21.0, 33.0])
    assert s["mean_diff"] == pytest.approx(np.mean([1, 1, 3]))
    assert s["loa_high"] - s["loa_low"] == pytest.approx(2 * 1.96 * np.std([1, 1, 3], ddof=1))
    assert bland_altman([10.0, 20.0], [None, 21.0])["n"] == 1  # withheld values are left out


def test_validate_function_on_a_loo_run_layout(tmp_path: Path, capsys) -> None:
    """`lvmyoseg validate-function RUN DATASET -o OUT` on the layout `lvmyoseg loo` writes
    (settings.json, fold_<case>.json, fold_<case>/labels_<variant>.npz with the label map and
    probabilities). The prediction here is the expert's labels with an outflow-tract slice
    added and the cavity grown: no network, the point is the command and its files."""
    case = read_case(SAMPLE_DIR, "SCD0000101")
    ed, es = cardiac_phases(case.labels)
    pred = _with_basal_outflow(case.labels.label_map, (ed, es))
    for t in (ed, es):
        for z in range(1, 10):
            pred[t, z][ndimage.binary_dilation(pred[t, z] == BLOOD_POOL)] = BLOOD_POOL
    probs = np.stack([pred == MYOCARDIUM, pred == BLOOD_POOL], -1).astype(np.float16)
    run = tmp_path / "run"
    (run / "fold_SCD0000101").mkdir(parents=True)
    (run / "settings.json").write_text(json.dumps({"cases": ["SCD0000101", "not_finished"]}))
    (run / "fold_SCD0000101.json").write_text("{}")
    np.savez_compressed(run / "fold_SCD0000101" / "labels_multi_level.npz", label_map=pred,
                        probabilities=probs)
    out = tmp_path / "function"
    assert main(["validate-function", str(run), str(SAMPLE_DIR), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "EF exp. slices" in printed and "QC check" in printed
    result = json.loads((out / "function_validation.json").read_text(), parse_constant=_refuse)
    (row,) = result["cases"]
    assert row["own_slices"] == {"ed": "1-9", "es": "1-9"}
    assert row["own"]["edv_ml"] > row["expert"]["edv_ml"]
    assert result["targets"]["withheld"] == 0
    q = result["qc_check"]
    assert q["n_slices"] == 9 and q["n_worst"] == 1
    assert q["caught_by_review_list_same_phase"] >= q["caught_by_review_list"]
    recs = row["qc"]
    assert q["review_list_share_of_slices"] == pytest.approx(np.mean([r["in_review"] for r in recs]))
    # the figures' frames lead the review list, with the stack's ends: the ED base and apex are on it
    assert {(ed, 1), (ed, 9)} <= {(r["frame"], r["slice"]) for r in recs if r["in_review"]}
    assert result["bland_altman"]["own"]["ef_percent"]["n"] == 1
    assert (out / "bland_altman.png").stat().st_size > 0
    # not a run folder: one clear error
    assert main(["validate-function", str(tmp_path), str(SAMPLE_DIR), "-o", str(out)]) == 2
    assert "settings.json" in capsys.readouterr().err


@pytest.mark.slow
def test_validate_function_after_a_real_tiny_loo_run(tmp_path: Path, capsys) -> None:
    """`lvmyoseg loo` (2 SYNTHETIC phantom cases, 1-epoch width-4 models: about a minute) then
    `validate-function` on its folder: the folds keep their probabilities for QC, and a
    model this poor gets its function values withheld (with the reason), never NaN."""
    from LVMyoSegLib.io import dataset, phantom

    ds = tmp_path / "dataset"
    for seed in range(2):
        cine, labels = phantom.make_synthetic_cine(n_phases=8, n_slices=4, size=128, seed=seed)
        dataset.add_case(ds, f"phantom{seed}", cine, phantom.sparsify_like_sunnybrook(labels))
    run = tmp_path / "run"
    assert main(["loo", str(ds), "-o", str(run), "--variants", "multi_level", "--cnn-epochs", "1",
                 "--rnn-epochs", "1", "--width", "4", "--pixel-mm", "2", "--crop-size", "64"]) == 0
    with np.load(run / "fold_phantom0" / "labels_multi_level.npz") as saved:
        assert saved["probabilities"].shape == saved["label_map"].shape + (2,)
    out = tmp_path / "function"
    assert main(["validate-function", str(run), str(ds), "-o", str(out)]) == 0
    result = json.loads((out / "function_validation.json").read_text(), parse_constant=_refuse)
    assert [r["case"] for r in result["cases"]] == ["phantom0", "phantom1"]
    for r in result["cases"]:
        assert r["withheld"] or r["own"]["ef_percent"] is not None
        assert r["expert"]["ef_percent"] > 0 and len(r["qc"]) == 4
    assert "| phantom0 |" in (out / "function_validation.md").read_text()
