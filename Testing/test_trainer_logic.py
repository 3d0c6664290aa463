"""The LV Myocardium Trainer's logic without Qt: command lines, progress, results tables, cases;
and the evidence that retraining helps (real Sunnybrook data, through the `lvmyoseg loo` command
the module runs).

MRML-level tests use the real MRML library of slicer-core (marked ``mrml``); the training
tests run the real command line in a subprocess (marked ``slow``).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import tree

from LVMyoSegLib.analysis.evaluation import case_summary, evaluate_case
from LVMyoSegLib.app import retraining
from LVMyoSegLib.cine import Cine, Geometry
from LVMyoSegLib.cli import main as cli
from LVMyoSegLib.cli.printing import training_printer
from LVMyoSegLib.errors import InputError, LabelError, ModelError
from LVMyoSegLib.io import dataset, phantom
from LVMyoSegLib.labels import Labels
from LVMyoSegLib.model import registry
from LVMyoSegLib.progress import ProgressEvent, part, progress_line, read_progress_line
from LVMyoSegLib.training import experiments
from LVMyoSegLib.training.loop import TrainConfig

# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def loo_results_file(tmp_path_factory, phantom_dataset) -> Path:
    """A loo_results.json written by experiments.summarise_loo from real evaluations: "before"
    labels shifted by 4 px, "after" by 1 px, against the phantom cases' labels."""
    out = tmp_path_factory.mktemp("loo")
    cases = dataset.list_cases(phantom_dataset)
    (out / "settings.json").write_text(json.dumps({"cases": cases, "members": 1}))
    for case_id in cases:
        case = dataset.read_case(phantom_dataset, case_id)
        fold = {"case": case_id, "records": {}, "summary": {}, "wall_time_s": 1.0}
        for name, shift in (("before", 4), ("after", 1)):
            auto = np.roll(case.labels.label_map, shift, axis=3)
            records = evaluate_case(auto, case.labels, case.cine.geometry, case_id)
            fold["records"][name], fold["summary"][name] = records, case_summary(records)
        (out / f"fold_{case_id}.json").write_text(json.dumps(fold))
    experiments.summarise_loo(out)
    return out / "loo_results.json"


@pytest.fixture(scope="module")
def phantom_tiny_bundle(tmp_path_factory) -> Path:
    """A tiny CNN (width 8, one unit per stage) trained briefly on two fully labelled SYNTHETIC
    phantoms: a model that has never seen real data (unlike conftest's untrained ``tiny_bundle``)."""
    folder = tmp_path_factory.mktemp("tiny")
    data = folder / "phantom-full"
    for seed in range(2):
        cine, labels = phantom.make_synthetic_cine(n_phases=8, n_slices=6, size=128, seed=10 + seed)
        dataset.add_case(data, f"phantom{seed}", cine, labels)
    tiny = TrainConfig(epochs=10, width=8, units=1, frames_per_batch=8, learning_rate=3e-3)
    config = experiments.ExperimentConfig(variants=("cnn",), members=1, cnn=tiny, rnn=tiny,
                                          preprocessing={"pixel_mm": 2.0, "crop_size": 64})
    return experiments.train_final(data, folder / "phantom-tiny", folder / "phantom-run", config,
                                   variant="cnn", model_id="phantom-tiny")


def _run_cli(cli_run, args: list[str], cwd: Path) -> tuple[int, list[str], str]:
    """Run the command line as the Trainer module does: through CliProcess in a real QProcess."""
    run = cli_run(args, cwd)
    end = run.wait(600)
    assert not end.cancelled
    return end.exit_code, run.lines, "\n".join(run.log)


def _track(lines: list[str]) -> list[ProgressEvent]:
    """The progress events among a command's standard-output lines, as the Trainer's jobs read them."""
    return [event for event in map(read_progress_line, lines) if event is not None]


# ------------------------------------------------------------------ command lines


def test_settings_are_checked(tmp_path):
    with pytest.raises(InputError, match="variant"):
        retraining.RetrainSettings(tmp_path, variant="unet")
    with pytest.raises(InputError, match="at least 1"):
        retraining.RetrainSettings(tmp_path, members=0)
    with pytest.raises(InputError):
        retraining.RetrainSettings(tmp_path, init=" ")
    assert retraining.RetrainSettings(tmp_path).fine_tuning
    assert not retraining.RetrainSettings(tmp_path, init="scratch").fine_tuning


def test_loo_command_line_is_what_the_real_cli_parses(phantom_dataset, tmp_path):
    settings = retraining.RetrainSettings(phantom_dataset, init="porcine-v1", members=3, cnn_epochs=7,
                                          rnn_epochs=4, cases=("phantom0", "phantom1"),
                                          extra_args=("--width", "8"))
    args = retraining.loo_args(settings, tmp_path / "run", tmp_path / "models")
    ns = cli.build_parser().parse_args(args)
    assert (ns.command, ns.dataset, ns.output) == ("loo", str(phantom_dataset), str(tmp_path / "run"))
    assert (ns.init, ns.registry, ns.members, ns.cnn_epochs, ns.rnn_epochs) == \
        ("porcine-v1", str(tmp_path / "models"), 3, 7, 4)
    assert ns.cases == "phantom0,phantom1" and ns.width == 8 and ns.progress_lines
    assert ns.variants is None  # fine-tuning keeps the start model's variant
    scratch = retraining.RetrainSettings(phantom_dataset, init="scratch", variant="one_level")
    ns = cli.build_parser().parse_args(retraining.loo_args(scratch, tmp_path, tmp_path))
    assert (ns.init, ns.variants, ns.cases) == ("scratch", "one_level", None)


def test_train_command_line_registers(phantom_dataset, tmp_path):
    settings = retraining.RetrainSettings(phantom_dataset, init="bundled", variant="cnn", members=2)
    args = retraining.train_args(settings, tmp_path / "ckpt", tmp_path / "models", "v2",
                                 loo_results=tmp_path / "loo_results.json")
    ns = cli.build_parser().parse_args(args)
    assert (ns.command, ns.register, ns.output, ns.model_id) == ("train", True, None, "v2")
    assert (ns.run_dir, ns.registry, ns.loo_results) == \
        (str(tmp_path / "ckpt"), str(tmp_path / "models"), str(tmp_path / "loo_results.json"))
    assert (ns.init, ns.variant, ns.members, ns.progress_lines) == ("bundled", "cnn", 2, True)
    assert retraining.default_model_id(Path("/data/my pig study"), "20250101-120000") == \
        "my_pig_study-20250101-120000"
    registry.check_model_id(retraining.default_model_id(phantom_dataset, "20250101-120000"))


def test_same_job_same_folder_other_data_other_folder(tmp_path):
    data = tmp_path / "data"
    cine, labels = phantom.make_synthetic_cine(n_phases=4, n_slices=2, size=64, seed=1)
    dataset.add_case(data, "a", cine, labels)
    settings = retraining.RetrainSettings(data, cnn_epochs=5)
    first = retraining.job_dir(tmp_path / "runs", "loo", settings)
    assert first == retraining.job_dir(tmp_path / "runs", "loo", retraining.RetrainSettings(data, cnn_epochs=5))
    assert first.parent == tmp_path / "runs" and first.name.startswith("loo-data-")
    assert first != retraining.job_dir(tmp_path / "runs", "loo", retraining.RetrainSettings(data, cnn_epochs=6))
    assert first != retraining.job_dir(tmp_path / "runs", "train", settings)
    dataset.add_case(data, "b", cine, labels)
    assert first != retraining.job_dir(tmp_path / "runs", "loo", settings)  # new dataset manifest


# ------------------------------------------------------------------ progress


def _fake_fit(first_epoch: int = 1):
    """A stand-in for loop.fit_cnn/fit_rnn: reports epochs ``first_epoch``.. as the loop does (a batch,
    then the epoch) and trains nothing."""

    def fit(*args, variant="cnn", progress=None, **kwargs):
        epochs = next(a for a in args if isinstance(a, TrainConfig)).epochs
        for epoch in range(first_epoch, epochs + 1):
            for kind in ("batch", "epoch"):
                progress(ProgressEvent(epoch / epochs, f"{variant} epoch {epoch}/{epochs}", kind=kind, eta_s=90.0,
                                       epoch=epoch, epochs=epochs, loss=0.5, val_dsc=0.7))
        return SimpleNamespace(model=variant)

    return fit


def _printed_lines(capsys, monkeypatch, tmp_path, folds: int | None, config, first_epoch: int = 1) -> list[str]:
    """What ``lvmyoseg loo`` (``folds``) or ``train`` print with --progress-lines: train_variants with
    stand-in fits, each fold's part of the progress passed on as run_loo passes it; 1 s per printed line."""
    monkeypatch.setattr(experiments, "fit_cnn", _fake_fit(first_epoch))
    monkeypatch.setattr(experiments, "fit_rnn", _fake_fit(first_epoch))
    arrays = SimpleNamespace(x=np.zeros((1, 2, 4, 4, 1)), y=np.zeros((1, 2, 4, 4, 2)), known=np.ones((1, 2, 2), bool))
    show = training_printer(True, clock=lambda seconds=itertools.count(): float(next(seconds)))
    for k in range(folds or 1):
        progress = show if folds is None else part(show, k / folds, 1 / folds, f"fold {k + 1}/{folds} (case-{k})",
                                                   fold=k, folds=folds, case=f"case-{k}")
        experiments.train_variants([arrays], tmp_path, config, progress=progress)
    return capsys.readouterr().out.splitlines()


def test_progress_of_a_leave_one_out_as_the_cli_prints_it(capsys, monkeypatch, tmp_path):
    config = experiments.ExperimentConfig(variants=("multi_level",), members=2, cnn=TrainConfig(epochs=3),
                                          rnn=TrainConfig(epochs=2))
    lines = _printed_lines(capsys, monkeypatch, tmp_path, 3, config)
    assert len(lines) == 3 * 2 * (3 + 2)  # one PROGRESS line per finished epoch
    updates = _track(lines)
    fractions = [u.fraction for u in updates]
    assert len(updates) == len(lines) and fractions == sorted(fractions) and len(set(fractions)) == len(fractions)
    assert fractions[-1] == pytest.approx(1.0) and fractions[0] == pytest.approx(1 / 30)
    assert updates[0].eta_s is None and updates[1].eta_s == pytest.approx(28.0)  # 1 s per epoch, 28 left
    assert updates[6].message == "fold 1/3 (case-0), member 2/2, cnn epoch 2/3"
    assert updates[11].message == "fold 2/3 (case-1), member 1/2, cnn epoch 2/3"
    assert updates[4].message == "fold 1/3 (case-0), member 1/2, multi_level epoch 2/2"
    assert (updates[4].fold, updates[4].folds, updates[4].case, updates[4].member, updates[4].members) == \
        (0, 3, "case-0", 0, 2)


def test_progress_of_a_training_and_of_a_resumed_job(capsys, monkeypatch, tmp_path):
    config = experiments.ExperimentConfig(variants=("cnn",), members=1, cnn=TrainConfig(epochs=4))
    lines = _printed_lines(capsys, monkeypatch, tmp_path, None, config)
    assert [u.fraction for u in _track(lines)] == [0.25, 0.5, 0.75, 1.0]
    resumed = _track(_printed_lines(capsys, monkeypatch, tmp_path, None, config, first_epoch=3))
    assert resumed[0].fraction == 0.75 and resumed[0].eta_s is None  # epochs 1-2 were done before: not fast ones
    assert resumed[1].eta_s == pytest.approx(0.0)


def test_progress_line_parsing():
    event = ProgressEvent(0.5, "cnn epoch 1/2", kind="epoch", epoch=1, epochs=2, loss=0.25)
    line = progress_line(event)
    assert json.loads(line.removeprefix("PROGRESS ")) == {  # fields that are None are left out
        "fraction": 0.5, "message": "cnn epoch 1/2", "kind": "epoch", "epoch": 1, "epochs": 2, "loss": 0.25}
    assert read_progress_line(line) == event
    assert read_progress_line('PROGRESS {"fraction": 1, "message": ""}') == ProgressEvent(1, "")
    for line in ('progress {"fraction": 0.5, "message": "x"}', 'PROGRESS {"fraction": NaN, "message": "x"}',
                 'PROGRESS {"fraction": 0.5}', 'PROGRESS {"fraction": "0.5", "message": "x"}',
                 'PROGRESS {"fraction": 0.5, "message": "x", "colour": 1}', "PROGRESS abc", "PROGRESS 0.5 x",
                 "Epoch 1/2", "wrote model bundle x", ""):
        assert read_progress_line(line) is None


def test_eta_text():
    assert retraining.format_eta(None) == ""
    assert retraining.format_eta(20) == "ETA < 1 min"
    assert retraining.format_eta(4 * 60 + 10) == "ETA 4 min"
    assert retraining.format_eta(65 * 60) == "ETA 1 h 05 min"


# ------------------------------------------------------------------ results


def test_loo_results_become_table_columns(loo_results_file):
    plot = loo_results_file.parent / "loo_scores.png"  # written with the table by summarise_loo
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    results = retraining.read_loo_results(loo_results_file)
    columns, units = retraining.loo_table_columns(results)
    assert list(columns)[:2] == ["case", "slices"]
    assert [c for c in columns if c.startswith("DSC")] == ["DSC before", "DSC after"]
    assert units["HD after"] == "mm" and units["DSC after"] == ""
    assert columns["case"] == ["phantom0", "phantom1", "mean of 2 folds"]
    for row, fold in enumerate(results["folds"]):
        for key, title in (("dsc", "DSC"), ("hd_mm", "HD"), ("apd_mm", "APD")):
            for name in ("before", "after"):
                assert columns[f"{title} {name}"][row] == pytest.approx(fold["summary"][name][key]["mean"])
        assert columns["slices"][row] == fold["summary"]["before"]["dsc"]["n"] > 0
    assert columns["DSC after"][-1] == pytest.approx(results["overall"]["after"]["dsc"]["mean"])
    assert all(a > b for a, b in zip(columns["DSC after"], columns["DSC before"]))  # 1 px beats 4 px
    assert retraining.loo_summary(results).startswith(
        f"Held-out DSC {columns['DSC before'][-1]:.3f} before -> {columns['DSC after'][-1]:.3f} after (2/2 folds)")


def test_bad_loo_results_are_refused(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        retraining.read_loo_results(tmp_path / "loo_results.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        retraining.read_loo_results(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"folds": 3}')
    with pytest.raises(InputError, match="not an lvmyoseg loo results"):
        retraining.read_loo_results(tmp_path / "other.json")


@pytest.mark.mrml
def test_loo_results_into_a_table_node_and_chart(scene, loo_results_file):
    from LVMyoSegLib import mrml

    columns, units = retraining.loo_table_columns(retraining.read_loo_results(loo_results_file))
    table = mrml.table_from_columns(scene, columns, name="LOO phantom", units=units)
    assert table.GetScene() is scene and table.IsA("vtkMRMLTableNode")
    assert (table.GetNumberOfRows(), table.GetNumberOfColumns()) == (3, len(columns))
    assert [table.GetCellText(r, 0) for r in range(3)] == columns["case"]
    vtk_table = table.GetTable()
    for name, values in columns.items():
        if name != "case":
            got = [vtk_table.GetValueByName(r, name).ToDouble() for r in range(3)]
            assert got == pytest.approx(values)
    assert table.GetColumnUnitLabel("HD before") == "mm"
    chart = mrml.bar_chart(scene, table, ["DSC before", "DSC after"], label_column="case", name="LOO chart",
                           title="Held-out DSC", y_title="DSC")
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    series = [chart.GetNthPlotSeriesNode(i) for i in range(2)]
    assert [s.GetYColumnName() for s in series] == ["DSC before", "DSC after"]
    assert all(s.GetTableNodeID() == table.GetID() and s.GetPlotType() == s.PlotTypeBar for s in series)
    again = mrml.table_from_columns(scene, {"case": ["x"], "DSC after": [0.5]}, table_node=table)
    assert again is table and table.GetNumberOfRows() == 1
    with pytest.raises(InputError, match="different lengths"):
        mrml.table_from_columns(scene, {"a": [1.0], "b": [1.0, 2.0]})
    with pytest.raises(InputError, match="no column"):
        mrml.bar_chart(scene, table, ["HD never"], label_column="case", name="x", title="", y_title="")


@pytest.mark.mrml
def test_scene_segmentation_becomes_a_case(scene, tmp_path):
    from LVMyoSegLib import mrml
    from LVMyoSegLib.app import export

    cine, labels = phantom.make_synthetic_cine(n_phases=4, n_slices=3, size=64, seed=5)
    drawn = labels.label_map.copy()
    drawn[:, 1] = 0  # the user drew slices 0 and 2 only
    drawn[2] = 0     # and not frame 2
    cine_seq, _ = mrml.sequence_from_cine(scene, cine, "pig cine")
    seg_seq = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "corrected")
    matrix = mrml.ijk_to_ras(cine.geometry)
    for t in range(cine.n_phases):
        seg_seq.SetDataNodeAtValue(mrml.segmentation_node_from_labels(drawn[t], matrix), str(t))
    got_cine, got = export.drawn_labels(cine_seq, seg_seq)
    assert np.array_equal(got.label_map, drawn)
    expected = np.zeros((4, 3), bool)
    expected[np.ix_([0, 1, 3], [0, 2])] = True
    assert np.array_equal(got.known[:, :, 0], expected) and np.array_equal(got.known[:, :, 1], expected)
    case_id = retraining.unique_case_id(tmp_path / "ds", cine_seq.GetName())
    dataset.add_case(tmp_path / "ds", case_id, got_cine, got)
    assert retraining.unique_case_id(tmp_path / "ds", cine_seq.GetName()) == "pig_cine_2"
    empty = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "empty")
    for t in range(cine.n_phases):
        empty.SetDataNodeAtValue(mrml.segmentation_node_from_labels(np.zeros_like(drawn[t]), matrix), str(t))
    with pytest.raises(LabelError, match="holds no"):
        export.drawn_labels(cine_seq, empty)


# ------------------------------------------------------------------ cases


def test_import_cases_never_overwrites_and_refuses_damaged_ones(phantom_dataset, tmp_path):
    source_before = tree(phantom_dataset)
    target = tmp_path / "mine"
    report = retraining.import_cases(phantom_dataset, target)
    assert report.added == ("phantom0", "phantom1") and report.skipped == ()
    assert dataset.list_cases(target) == ["phantom0", "phantom1"]
    copied = dataset.read_case(target, "phantom0")
    original = dataset.read_case(phantom_dataset, "phantom0")
    assert np.array_equal(copied.labels.label_map, original.labels.label_map)
    assert np.array_equal(copied.labels.known, original.labels.known)
    target_before = tree(target)
    again = retraining.import_cases(phantom_dataset, target)
    assert again.added == () and [c for c, _ in again.skipped] == ["phantom0", "phantom1"]
    assert tree(target) == target_before and tree(phantom_dataset) == source_before

    damaged = tmp_path / "damaged"
    retraining.import_cases(phantom_dataset, damaged)
    labels_file = damaged / "cases" / "phantom1" / "labels.nrrd"
    labels_file.write_bytes(labels_file.read_bytes()[:-10] + b"0123456789")
    report = retraining.import_cases(damaged, tmp_path / "third")
    assert report.added == ("phantom0",)
    assert report.skipped[0][0] == "phantom1" and "SHA-256" in report.skipped[0][1]
    with pytest.raises(InputError, match="dataset itself"):
        retraining.import_cases(target, target)
    with pytest.raises(InputError, match="not an LVMyoSeg training dataset"):
        retraining.import_cases(tmp_path / "nothing", target)


# ------------------------------------------------------------------ the real command line


@pytest.mark.slow
def test_train_and_register_through_the_cli(cli_run, phantom_tiny_bundle, phantom_dataset, loo_results_file,
                                            tmp_path):
    reg = tmp_path / "models"
    registry.register(phantom_tiny_bundle, reg)
    settings = retraining.RetrainSettings(phantom_dataset, init="phantom-tiny", members=1, cnn_epochs=2)
    args = retraining.train_args(settings, tmp_path / "ckpt", reg, "phantom-ft", loo_results=loo_results_file)
    code, out, err = _run_cli(cli_run, args, tmp_path)
    assert code == 0, err[-2000:]
    assert [u.fraction for u in _track(out)] == [0.5, 1.0]
    entry = next(e for e in registry.list_models(reg) if e.model_id == "phantom-ft")
    assert (entry.parent, entry.variant, entry.members, entry.read_only) == ("phantom-tiny", "cnn", 1, False)
    overall = retraining.read_loo_results(loo_results_file)["overall"]
    assert entry.metrics == registry.metrics_summary(overall) != ""
    manifest = json.loads((entry.path / "manifest.json").read_text())
    assert manifest["training"]["cases"] == ["phantom0", "phantom1"]
    assert manifest["training"]["dataset_sha256"] == dataset.dataset_hash(phantom_dataset)
    snapshot = (entry.path / "manifest.json").read_bytes()
    code, _, err = _run_cli(cli_run, args, tmp_path)  # the same version again: refused, nothing changed
    assert code == 2 and "never overwritten" in err
    assert (entry.path / "manifest.json").read_bytes() == snapshot
    with pytest.raises(ModelError, match="read-only"):
        registry.new_model_dir(registry.MODELS_DIR, "phantom-ft")


def _shrunk_study(study, n_slices: int) -> tuple[Cine, Labels]:
    """A real Sunnybrook study cut to ``n_slices`` consecutive mid-ventricular slices (all phases)."""
    from LVMyoSegLib.io.sunnybrook import load_study

    dicom, labels = load_study(study)
    labelled = np.flatnonzero(labels.known[:, :, 0].any(axis=0))
    first = labelled[len(labelled) // 2 - n_slices // 2]
    zs = np.arange(first, first + n_slices)
    g = dicom.cine.geometry
    origin = np.asarray(g.origin) + g.direction @ np.array([0.0, 0.0, g.spacing[2] * first])
    cine = Cine(dicom.cine.frames[:, zs], Geometry(g.spacing, tuple(origin), g.direction),
                dicom.cine.trigger_times_ms, source=f"{dicom.cine.source} slices {zs[0]}-{zs[-1]}")
    return cine, Labels(labels.label_map[:, zs], labels.known[:, zs], source=labels.source)


@pytest.mark.slow
def test_fine_tuning_on_real_data_raises_held_out_dsc(sunnybrook_root, phantom_tiny_bundle, tmp_path, capsys):
    """Evidence that retraining helps: a model that has only seen the SYNTHETIC phantom is
    fine-tuned by leave-one-out (experiments.run_loo with init_bundle, what `lvmyoseg loo --init`
    runs) on 3 real Sunnybrook studies cut to 6 slices; the held-out DSC rises.

    Its progress goes through the command line's PROGRESS printer and back.
    """
    import dataclasses

    from LVMyoSegLib.io.sunnybrook import list_studies
    real = tmp_path / "sunnybrook-subset"
    for study in list_studies(sunnybrook_root)[:3]:
        cine, labels = _shrunk_study(study, 6)
        dataset.add_case(real, study.patient_id, cine, labels, source=f"Sunnybrook {study.patient_id} (CC0)")
    fine_tune = TrainConfig(epochs=10, frames_per_batch=4, learning_rate=3e-3)
    config = dataclasses.replace(experiments.ExperimentConfig(members=1), cnn=fine_tune, rnn=fine_tune)
    capsys.readouterr()
    results = experiments.run_loo(real, tmp_path / "loo", config, init_bundle=phantom_tiny_bundle,
                                  progress=training_printer(True))
    updates = _track(capsys.readouterr().out.splitlines())
    assert len(updates) == 30 and updates[-1].fraction == pytest.approx(1.0)

    columns, _ = retraining.loo_table_columns(retraining.read_loo_results(tmp_path / "loo" / "loo_results.json"))
    before, after = np.array(columns["DSC before"]), np.array(columns["DSC after"])
    with capsys.disabled():
        print("\n" + retraining.loo_summary(results))
        for case, b, a in zip(columns["case"], before, after):
            print(f"  {case}: held-out myocardium DSC {b:.3f} -> {a:.3f}")
    assert results["folds_done"] == 3 and results["settings"]["init"] == phantom_tiny_bundle.name
    assert np.count_nonzero(after[:3] > before[:3]) >= 2  # most held-out cases improve
    assert after[-1] > before[-1] + 0.05  # and the mean over folds clearly does


@pytest.mark.slow
def test_resumed_training_records_the_time_of_every_invocation(phantom_dataset, tmp_path):
    """A cancelled training resumed later: the bundle's wall time covers both invocations,
    not only the last one (what `lvmyoseg train` writes into the manifest)."""
    import time

    from LVMyoSegLib.errors import CancelledError
    tiny = TrainConfig(epochs=3, width=8, units=1, frames_per_batch=8)
    config = experiments.ExperimentConfig(variants=("cnn",), members=1, cnn=tiny, rnn=tiny,
                                          preprocessing={"pixel_mm": 2.0, "crop_size": 64})
    epochs: list[int] = []

    def note(event: ProgressEvent) -> None:
        if event.kind == "epoch":
            epochs.append(event.epoch)

    t0 = time.perf_counter()
    with pytest.raises(CancelledError):
        experiments.train_final(phantom_dataset, tmp_path / "bundle", tmp_path / "run", config, variant="cnn",
                                model_id="m", progress=note, cancel=lambda: len(epochs) >= 2)
    first = time.perf_counter() - t0
    saved = json.loads((tmp_path / "run" / experiments.WALL_TIME_FILE).read_text())["seconds"]
    assert 0.3 * first < saved <= first + 0.1  # saved at the end of epoch 2, before the cancel
    assert not (tmp_path / "bundle").exists()
    t1 = time.perf_counter()
    experiments.train_final(phantom_dataset, tmp_path / "bundle", tmp_path / "run", config, variant="cnn",
                            model_id="m", progress=note)
    second = time.perf_counter() - t1
    assert epochs == [1, 2, 3]  # resumed at epoch 3, not started over
    wall = json.loads((tmp_path / "bundle" / "manifest.json").read_text())["training"]["wall_time_s"]
    assert saved + 0.5 * second < wall <= saved + second + 0.1
