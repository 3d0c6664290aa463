"""The 36 hearts' ED/ES frames: import checks, network space, patient-level folds, known-empty slices."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from LVMyoSegLib.analysis.metrics import dice
from LVMyoSegLib.errors import InputError, LabelError
from LVMyoSegLib.labels import BLOOD_POOL, CHANNELS, MYOCARDIUM, Labels
from LVMyoSegLib.training import edes, patient_split
from LVMyoSegLib.training.outside_lv import basal_end, with_known_empty_above_base

CINE_PATIENTS = ["SCD0000101", "SCD0000201", "SCD0000301", "SCD0000401", "SCD0000501"]


@pytest.fixture(scope="module")
def two_patients(edes_root):
    return edes.read_edes(edes_root, ["SCD0000101", "SCD0002001"])


def _rows(root: Path) -> list[dict[str, str]]:
    with (root / "frames.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _small_copy(root: Path, dest: Path, patients: tuple[str, ...] = ("SCD0002001",)) -> Path:
    """A frames folder with some real patients' rows and files."""
    rows = [r for r in _rows(root) if r["cap_id"] in patients]
    for sub in ("images", "endocardium", "epicardium"):
        (dest / sub).mkdir(parents=True)
        for r in rows:
            if (root / sub / r["file"]).is_file():
                shutil.copy(root / sub / r["file"], dest / sub / r["file"])
    _write_rows(dest, rows)
    return dest


def _write_rows(dest: Path, rows: list[dict[str, str]]) -> None:
    with (dest / "frames.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_all_36_hearts_are_read_with_sparse_labels(edes_root):
    patients = edes.read_edes(edes_root)
    frames = [f for p in patients for f in p.frames]
    assert len(patients) == 36 and len(frames) == 644
    assert {g: sum(p.group == g for p in patients) for g in edes.GROUP_CODES.values()} == \
        {"HF-I": 10, "HF-NI": 9, "HYP": 10, "N": 7}
    for f in frames:
        assert f.known == ((True, True) if f.kind == "ED" else (False, True))
        assert (f.label_map == BLOOD_POOL).any()
        assert (f.label_map == MYOCARDIUM).any() == (f.kind == "ED")
    assert set(CINE_PATIENTS) <= {p.patient_id for p in patients}
    usable, excluded = edes.usable_patients(patients)
    assert list(excluded) == ["SCD0004001"] and "do not sit on its images" in excluded["SCD0004001"]
    assert len(usable) == 35


def test_masks_shifted_off_their_images_set_the_patient_apart(two_patients):
    patient = two_patients[1]
    assert edes.alignment_problem(patient) is None
    shifted = dataclasses.replace(patient, frames=tuple(
        dataclasses.replace(f, label_map=np.roll(f.label_map, (30, 30), axis=(0, 1))) for f in patient.frames))
    problem = edes.alignment_problem(shifted)
    assert problem is not None and "Redraw or re-register" in problem
    assert edes.usable_patients([shifted]) == ({}, {patient.patient_id: problem})


@pytest.mark.parametrize("damage, message", [
    ("mask_size", "must lie on its image's grid"),
    ("mask_values", "holds only 0 and 1"),
    ("endo_outside_epi", "outside the epicardium"),
    ("es_with_epicardium", "ED only"),
    ("duplicate", "remove the duplicate row"),
    ("missing_file", "is missing"),
    ("pathology", "unknown pathology"),
    ("empty_mask", "is empty"),
])
def test_bad_frames_are_refused_naming_the_file(edes_root, tmp_path, damage, message):
    root = _small_copy(edes_root, tmp_path / "frames")
    rows = _rows(root)
    ed = next(r for r in rows if r["frame"] == "ED")
    es = next(r for r in rows if r["frame"] == "ES")
    before = {p: p.read_bytes() for p in root.rglob("*.png")}
    if damage == "mask_size":
        sitk.WriteImage(sitk.GetImageFromArray(np.ones((128, 128), np.uint8)), str(root / "endocardium" / ed["file"]))
    elif damage == "mask_values":
        m = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "endocardium" / ed["file"])))
        sitk.WriteImage(sitk.GetImageFromArray((m * 255).astype(np.uint8)), str(root / "endocardium" / ed["file"]))
    elif damage == "endo_outside_epi":
        m = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "endocardium" / ed["file"])))
        sitk.WriteImage(sitk.GetImageFromArray(np.roll(m, 40, axis=1)), str(root / "endocardium" / ed["file"]))
    elif damage == "empty_mask":
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((256, 256), np.uint8)), str(root / "endocardium" / es["file"]))
    elif damage == "es_with_epicardium":
        es["epicardium"] = "1"
    elif damage == "duplicate":
        rows.append(dict(ed))
    elif damage == "missing_file":
        (root / "images" / es["file"]).unlink()
    elif damage == "pathology":
        ed["pathology"] = "Athlete"
    _write_rows(root, rows)
    before = {p: p.read_bytes() for p in root.rglob("*.png")}
    with pytest.raises((InputError, LabelError), match=message) as caught:
        edes.read_edes(root)
    assert "frames.csv" in str(caught.value) or ".png" in str(caught.value)
    assert before == {p: p.read_bytes() for p in root.rglob("*.png")}  # nothing changed


def test_frames_in_network_space_are_centred_and_map_back(two_patients):
    for patient in two_patients:
        frames = edes.patient_frames(patient, 4 / 3, 96)
        n = len(patient.frames)
        assert frames.x.shape == (n, 1, 96, 96, 1) and frames.y.shape == (n, 1, 96, 96, 2)
        assert frames.known.shape == (n, 1, 2) and list(frames.patients) == [patient.patient_id] * n
        assert 0.0 <= frames.x.min() and frames.x.max() <= 1.0
        pool = frames.y[:, 0, ..., 1]
        centres = np.array([np.argwhere(p).mean(axis=0) for p in pool])
        assert np.all(np.abs(centres - 47.5) < 15), centres  # the cavity lies near the crop centre
        back = edes.to_frame_grid(frames.y, frames)
        for k, f in enumerate(frames.frames):
            assert dice(back[k, ..., 1] >= 0.5, f.label_map == BLOOD_POOL) > 0.97


def test_folds_are_stratified_and_spread_the_cine_patients(edes_root):
    groups = {r["cap_id"]: edes.GROUP_CODES[r["pathology"]] for r in _rows(edes_root)}
    folds = patient_split.stratified_folds(groups, 6, seed=0, spread=CINE_PATIENTS)
    assert sorted(p for f in folds for p in f) == sorted(groups)
    assert [sum(p in f for p in CINE_PATIENTS) for f in folds] == [1, 1, 1, 1, 1, 0]
    for g in set(groups.values()):
        per_fold = [sum(groups[p] == g for p in f) for f in folds]
        assert max(per_fold) - min(per_fold) <= 1, (g, per_fold)
    assert folds == patient_split.stratified_folds(groups, 6, seed=0, spread=CINE_PATIENTS)
    assert folds != patient_split.stratified_folds(groups, 6, seed=1, spread=CINE_PATIENTS)


def test_a_patient_is_never_on_both_sides(two_patients):
    from LVMyoSegLib.training.stage_one_frames import stage_one_arrays

    patients = {p.patient_id: p for p in two_patients}
    with pytest.raises(InputError, match="SCD0000101 are on both sides"):
        stage_one_arrays(["SCD0000101", "SCD0002001"], patients, {}, {"pixel_mm": 4 / 3, "crop_size": 96},
                         test_ids=["SCD0000101"])
    x, y, known, ids = stage_one_arrays(["SCD0002001"], patients, {}, {"pixel_mm": 4 / 3, "crop_size": 96},
                                        test_ids=["SCD0000101"])
    assert set(ids) == {"SCD0002001"} and len(x) == len(patients["SCD0002001"].frames)


def test_known_empty_labels_above_the_base_only(study):
    _, labels = study  # SCD0000101: 12 slices, contoured 1..9, atria/outflow at 10 and 11, below the apex at 0
    assert basal_end(labels) == 1
    marked = with_known_empty_above_base(labels)
    added = marked.known & ~labels.known
    frames = np.flatnonzero(labels.known.any(axis=(1, 2)))
    assert sorted({int(z) for z in np.nonzero(added)[1]}) == [10, 11]
    assert np.all(added[frames][:, 10:]) and not added[:, :10].any()
    assert not marked.label_map[frames][:, 10:].any()
    assert np.array_equal(marked.known[labels.known], labels.known[labels.known])  # expert labels kept
    assert not marked.known[:, 0].any()  # the apical end stays unknown


def test_a_basal_slice_with_the_cavity_drawn_keeps_its_myocardium_unknown():
    # 5 slices, base at the high end (the cavity widens), nothing drawn on slice 4.
    # ED (t=0): myocardium on slices 0-2, cavity on 0-3 (slice 3 cavity only, as SCD0000501's base);
    # ES (t=1): cavity on 0-2.
    myo, pool = CHANNELS.index("myocardium"), CHANNELS.index("blood_pool")
    lm = np.zeros((2, 5, 16, 16), np.uint8)
    known = np.zeros((2, 5, 2), bool)
    for z in range(4):
        r = 3 + z
        lm[0, z, 8 - r:8 + r, 8 - r:8 + r] = MYOCARDIUM if z < 3 else 0
        lm[0, z, 9 - r:7 + r, 9 - r:7 + r] = BLOOD_POOL
    lm[1, :3, 6:10, 6:10] = BLOOD_POOL
    known[0, :3, myo] = known[0, :4, pool] = known[1, :3, pool] = True
    labels = Labels(lm, known)
    assert basal_end(labels) == 1
    added = with_known_empty_above_base(labels).known & ~known
    assert sorted(map(tuple, np.argwhere(added).tolist())) == [
        (0, 4, myo), (0, 4, pool), (1, 3, pool), (1, 4, myo), (1, 4, pool)]
    flipped = Labels(lm[:, ::-1].copy(), known[:, ::-1].copy())  # base at slice 0 now
    assert basal_end(flipped) == -1
    assert np.array_equal(with_known_empty_above_base(flipped).known, (added | known)[:, ::-1])


@pytest.mark.slow
def test_leave_one_out_takes_stage_one_from_the_fold_that_held_the_patient_out(edes_root, tmp_path):
    """Cines whose case ids are ED/ES patients (SYNTHETIC phantom cines under those ids): the
    cross-validation gives each its own fold, and `loo --stage-one` trains only stage 2."""
    from LVMyoSegLib.io import dataset, phantom
    from LVMyoSegLib.model.bundle import load_keras_file
    from LVMyoSegLib.model.ensemble import predict_ensemble
    from LVMyoSegLib.training import experiments
    from LVMyoSegLib.training.cross_validation import run_cv
    from LVMyoSegLib.training.loop import TrainConfig
    from LVMyoSegLib.training.stage_one_frames import fold_cnn_paths

    ids = ("SCD0002001", "SCD0002101", "SCD0002201")
    root = _small_copy(edes_root, tmp_path / "frames", ids)
    rows = _rows(root)
    cines = tmp_path / "cines"
    for seed, pid in enumerate(ids[:2]):
        cine, labels = phantom.make_synthetic_cine(n_phases=6, n_slices=4, size=96, seed=30 + seed)
        dataset.add_case(cines, pid, cine, labels)
    tiny = TrainConfig(epochs=1, width=4, units=1, augment=False)
    config = experiments.ExperimentConfig(variants=("cnn", "one_level"), cnn=tiny, rnn=tiny,
                                          preprocessing={"pixel_mm": 2.0, "crop_size": 64})
    events = []
    cv = run_cv(root, tmp_path / "cv", config, cine_dataset=cines, n_folds=3, progress=events.append)
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    folds = cv["settings"]["folds"]
    assert cv["folds_done"] == 3 and [sum(p in f for p in ids[:2]) for f in folds] == [1, 1, 0]
    n_cine_frames = {pid: int(dataset.read_case(cines, pid).labels.known.any(axis=2).sum()) for pid in ids[:2]}
    for k, fold in enumerate(folds):
        record = json.loads((tmp_path / "cv" / f"fold_{k}.json").read_text())
        assert {r["case"] for r in record["records"]} == set(fold)  # scored on its held-out ED/ES frames
        n_ed = sum(r["cap_id"] in fold and r["frame"] == "ED" for r in rows)
        assert sum(r["channel"] == "myocardium" for r in record["records"]) == n_ed
        # training: cine frames for a patient with a cine, its ED/ES frames otherwise, never both
        assert record["train_frames"] == sum(
            n_cine_frames[p] if p in n_cine_frames else sum(r["cap_id"] == p for r in rows)
            for f in folds if f is not fold for p in f)
    assert "| all | 3 |" in (tmp_path / "cv" / "cv_table.md").read_text()
    stamp = (tmp_path / "cv" / "fold_0.json").stat().st_mtime_ns
    run_cv(root, tmp_path / "cv", config, cine_dataset=cines, n_folds=3)  # finished folds are not run again
    assert (tmp_path / "cv" / "fold_0.json").stat().st_mtime_ns == stamp
    with pytest.raises(InputError, match="other settings"):
        run_cv(root, tmp_path / "cv", config, cine_dataset=cines, n_folds=2)
    events.clear()  # `cv --fold 2`: its progress (and ETA) is that of the one fold it runs
    run_cv(root, tmp_path / "cv_one", config, cine_dataset=cines, n_folds=3, folds_to_run=[2], progress=events.append)
    assert events[0].fraction <= 0.5 and events[-1].fraction == pytest.approx(1.0)  # all 3 folds: >= 2/3
    with pytest.raises(InputError, match="no fold"):
        fold_cnn_paths(tmp_path / "cv", "SCD0009999")

    # an ensemble of 2 on fold 0, its member 0 copied from the 1-member run: not trained again
    (tmp_path / "cv_x2" / "fold_0").mkdir(parents=True)
    shutil.copytree(tmp_path / "cv" / "fold_0" / "cnn", tmp_path / "cv_x2" / "fold_0" / "cnn")
    state = tmp_path / "cv_x2" / "fold_0" / "cnn" / "checkpoint" / "state.json"  # rewritten by every epoch
    stamp = state.stat().st_mtime_ns
    pair = run_cv(root, tmp_path / "cv_x2", dataclasses.replace(config, members=2), cine_dataset=cines, n_folds=3,
                  folds_to_run=[0])
    assert state.stat().st_mtime_ns == stamp
    assert (tmp_path / "cv_x2" / "fold_0" / "cnn_1" / "model.keras").is_file()
    one, two = (json.loads((tmp_path / d / "fold_0.json").read_text()) for d in ("cv", "cv_x2"))
    assert two["records_member_0"] == one["records"]  # the same member 0, scored alone
    assert two["records"] != one["records"]  # the ensemble's own scores
    assert pair["settings"]["members"] == 2 and "members" not in cv["settings"]
    assert cv["settings"]["rotations"] == 4 and "rotations" not in dataclasses.replace(config, rotations=1).to_dict()
    assert pair["ensemble_gain"]["member_0"] == one["summary"] and pair["ensemble_gain"]["ensemble"] == two["summary"]
    assert "| all, member 0 alone |" in (tmp_path / "cv_x2" / "cv_table.md").read_text()

    unfinished = fold_cnn_paths(tmp_path / "cv", ids[1])[0]
    unfinished.rename(unfinished.with_suffix(".away"))  # as while its CV fold is still training
    results = experiments.run_loo(cines, tmp_path / "loo", config, stage_one=tmp_path / "cv")
    assert results["folds_done"] == 1 and not (tmp_path / "loo" / f"fold_{ids[1]}.json").exists()
    unfinished.with_suffix(".away").rename(unfinished)
    results = experiments.run_loo(cines, tmp_path / "loo", config, stage_one=tmp_path / "cv")
    assert results["folds_done"] == 2 and results["settings"]["stage_one"] == "cv"
    for pid in ids[:2]:
        fold_dir = tmp_path / "loo" / f"fold_{pid}"
        assert not (fold_dir / "member_0" / "cnn").exists()  # stage 1 came from the CV fold
        assert (fold_dir / "member_0" / "rnn_one_level" / "model.keras").is_file()
        cnn = load_keras_file(fold_cnn_paths(tmp_path / "cv", pid)[0])
        prepared = experiments.prepare_case(dataset.read_case(cines, pid), config.preprocessing)
        expected = experiments.predict_case([cnn], prepared, 0.5, config.rotations)[1]
        stored = np.load(fold_dir / "labels_cnn.npz")["label_map"]
        assert np.array_equal(stored, expected)
        assert predict_ensemble([cnn], prepared.x).shape[-1] == 2

    # the 2-member CV fold gives the leave-one-out fold of its cine patient 2 stage-1 members
    with pytest.raises(InputError, match="trains 2 CNN"):
        experiments.run_loo(cines, tmp_path / "loo_x3", dataclasses.replace(config, members=3),
                            stage_one=tmp_path / "cv_x2")
    assert not (tmp_path / "loo_x3").exists()
    pid = next(p for p in ids[:2] if p in folds[0])
    pair = experiments.run_loo(cines, tmp_path / "loo_x2", dataclasses.replace(config, members=2),
                               stage_one=tmp_path / "cv_x2")
    assert pair["folds_done"] == 1 and (tmp_path / "loo_x2" / f"fold_{pid}.json").is_file()  # fold 0's only
    cnns = [load_keras_file(p) for p in fold_cnn_paths(tmp_path / "cv_x2", pid, 2)]
    prepared = experiments.prepare_case(dataset.read_case(cines, pid), config.preprocessing)
    stored = np.load(tmp_path / "loo_x2" / f"fold_{pid}" / "labels_cnn.npz")["label_map"]
    assert np.array_equal(stored, experiments.predict_case(cnns, prepared, 0.5, config.rotations)[1])
    assert (tmp_path / "loo_x2" / f"fold_{pid}" / "member_1" / "rnn_one_level" / "model.keras").is_file()
    alone = np.load(tmp_path / "loo_x2" / f"fold_{pid}" / "labels_cnn_member_0.npz")["label_map"]
    assert np.array_equal(alone, experiments.predict_case(cnns[:1], prepared, 0.5, config.rotations)[1])
    assert set(pair["overall"]) == {"cnn", "one_level", "cnn_member_0", "one_level_member_0"}
    assert "| metric | CNN | One-level ConvLSTM | CNN, member 0 alone | One-level ConvLSTM, member 0 alone |" \
        in (tmp_path / "loo_x2" / "loo_table.md").read_text()


@pytest.mark.slow
def test_training_on_every_patient_records_who_was_used_and_set_apart(edes_root, tmp_path):
    """`train --edes`: stage 1 on every usable ED/ES patient (SYNTHETIC phantom cine under one id)."""
    from LVMyoSegLib.io import dataset, phantom
    from LVMyoSegLib.model.bundle import read_manifest
    from LVMyoSegLib.training import experiments
    from LVMyoSegLib.training.loop import TrainConfig

    ids = ("SCD0002001", "SCD0002101")
    root = _small_copy(edes_root, tmp_path / "frames", ids)
    cines = tmp_path / "cines"
    cine, labels = phantom.make_synthetic_cine(n_phases=6, n_slices=4, size=96, seed=30)
    dataset.add_case(cines, ids[0], cine, labels)
    tiny = TrainConfig(epochs=1, width=4, units=1, augment=False)
    config = experiments.ExperimentConfig(cnn=tiny, rnn=tiny, preprocessing={"pixel_mm": 2.0, "crop_size": 64})
    bundle = experiments.train_final(cines, tmp_path / "bundle", tmp_path / "run", config, variant="one_level",
                                     model_id="t", edes_root=root)
    training = read_manifest(bundle).training
    assert read_manifest(bundle).rotations == config.rotations == 4  # the views its scoring averages
    assert training["edes"] == "frames" and training["edes_patients"] == list(ids)
    assert training["edes_excluded"] == {}
