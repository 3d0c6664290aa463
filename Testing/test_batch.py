"""``lvmyoseg batch``: the study list, the table, and real batches over the 5 real Sunnybrook cines
plus 2 bad inputs, on a real Dask LocalCluster (1 and 2 worker processes), with the bundled model."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from LVMyoSegLib.cli.main import main
from LVMyoSegLib.errors import InputError
from LVMyoSegLib.io.volume_files import read_4d
from LVMyoSegLib.model.bundle import read_manifest
from LVMyoSegLib.resources import bundled_model_dir, sample_case_dir
from LVMyoSegLib.segmentation.cohort import COLUMNS, input_sha256, list_studies, output_complete, qc_summary

SAMPLE = sample_case_dir() / "cine.nrrd"
FAST = ["--members", "1", "--rotations", "1"]  # the bundled model's first member, 1 view: the batch, not accuracy
NUMBERS = [c for c in COLUMNS if c not in ("source", "runtime_s", "output", "model_sha256", "input_sha256")]


def _bad_inputs(folder: Path) -> None:
    """A real 3D volume (one phase of the sample cine) and a truncated copy of the sample cine."""
    import SimpleITK as sitk

    cine = read_4d(SAMPLE)
    sitk.WriteImage(sitk.GetImageFromArray(cine.frames[0]), str(folder / "one_phase.nii.gz"))
    data = SAMPLE.read_bytes()
    (folder / "truncated.nrrd").write_bytes(data[: len(data) // 2])


def _read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["id"]: row for row in csv.DictReader(fh)}


# ------------------------------------------------------------------ fast: the study list


def test_folder_of_studies_lists_folders_and_volumes_only(tmp_path: Path) -> None:
    (tmp_path / "b_study").mkdir()
    (tmp_path / "a.nii.gz").write_bytes(b"x")
    (tmp_path / "c.nrrd").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not a study")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "out").mkdir()
    studies = list_studies(tmp_path, exclude=tmp_path / "out")
    assert [s.id for s in studies] == ["a", "b_study", "c"]
    assert all(s.path.is_absolute() and s.rv_insertion is None for s in studies)


def test_csv_study_list_ids_paths_and_rv_insertion(tmp_path: Path) -> None:
    (tmp_path / "x.nrrd").write_bytes(b"x")
    (tmp_path / "list.csv").write_text("path,id,rv_insertion\nx.nrrd,patient-1,10 -20.5 3\n"
                                       f"{tmp_path / 'x.nrrd'},patient-2,\n")
    studies = list_studies(tmp_path / "list.csv")
    assert [(s.id, s.path, s.rv_insertion) for s in studies] == [
        ("patient-1", tmp_path / "x.nrrd", (10.0, -20.5, 3.0)), ("patient-2", tmp_path / "x.nrrd", None)]


@pytest.mark.parametrize("text, expected", [
    ("path\na.nrrd\nsub/a.nrrd\n", "distinct ids"),
    ("id\nfoo\n", "no `path` column"),
    ("path,rv_insertion\na.nrrd,1 2\n", "three numbers"),
    ("path,id\na.nrrd,../up\n", "cannot name a folder"),
])
def test_bad_study_lists_are_refused_with_the_reason(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "list.csv").write_text(text)
    with pytest.raises(InputError, match=expected):
        list_studies(tmp_path / "list.csv")


def test_input_hash_follows_the_bytes_of_a_folder(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "1.dcm").write_bytes(b"one")
    first = input_sha256(tmp_path / "s")
    (tmp_path / "s" / ".DS_Store").write_bytes(b"ignored")
    assert input_sha256(tmp_path / "s") == first
    (tmp_path / "s" / "1.dcm").write_bytes(b"One")
    assert input_sha256(tmp_path / "s") != first


def test_output_complete_needs_every_listed_file(tmp_path: Path) -> None:
    assert not output_complete(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps({"outputs": {"labels": "labels.nii.gz",
                                                                   "report": "report.json"}}))
    assert not output_complete(tmp_path)
    (tmp_path / "labels.nii.gz").write_bytes(b"x")
    assert output_complete(tmp_path)


def _report(folder: Path, labels: np.ndarray) -> dict:
    """A report.json as `segment` writes its function, QC and withholding part (real `assess`)."""
    from test_function_report import GEOMETRY, strict

    from LVMyoSegLib.analysis.function_report import assess

    t, z, y, x = labels.shape
    report = {"input": {"T": t, "Z": z, "spacing_mm_xyz": list(GEOMETRY.spacing)},
              **strict(assess(labels, GEOMETRY).to_dict())}
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps(report, allow_nan=False))
    return report


def test_row_reads_slices_counted_and_qc_from_the_real_report_keys(tmp_path: Path) -> None:
    from test_function_report import rings

    from LVMyoSegLib.analysis.qc import FLAG_SCORE
    from LVMyoSegLib.segmentation.cohort import Study, study_row

    labels = rings()
    labels[2, 3] = 0  # frame 2 loses slice 3: not counted there, and QC sees the jumps around it
    report = _report(tmp_path / "s", labels)
    row = study_row(Study("s", tmp_path / "in.nrrd"), tmp_path / "s", model_id="m", model_hash="h", members=1,
                    rotations=1, input_hash="i")
    function, qc = report["cardiac_function"], report["qc"]
    counted = {f: sum(r["counted"] for r in function["slices"]["rows"] if r["frame"] == f) for f in range(5)}
    assert counted[2] < 6 and row["slices_counted_ed"] == counted[function["ed_frame"]]
    assert row["slices_counted_es"] == counted[function["es_frame"]]
    scores = [v for v in qc["frame_scores"] if v is not None]
    assert row["qc_worst_score"] == round(max(scores), 4) and row["qc_worst_score"] > 0
    assert row["qc_flagged_frames"] == sum(v >= FLAG_SCORE for v in scores)
    assert row["qc_flagged_slices"] == qc["flagged_slices"]
    assert row["status"] == "ok" and row["function_withheld"] is None and row["edv_ml"] == round(function["edv_ml"], 3)


def test_withheld_function_leaves_the_function_columns_empty_and_says_why(tmp_path: Path) -> None:
    from test_function_report import rings

    from LVMyoSegLib.labels import MYOCARDIUM
    from LVMyoSegLib.segmentation.cohort import Study, study_row

    labels = rings()
    labels[0][labels[0] == MYOCARDIUM] = 0  # no myocardium on the ED frame (0): nothing can be measured
    report = _report(tmp_path / "s", labels)
    assert report["function_withheld"]
    row = study_row(Study("s", tmp_path / "in.nrrd"), tmp_path / "s", model_id="m", model_hash="h", members=1,
                    rotations=1, input_hash="i")
    assert row["status"] == "ok (function withheld)" and row["function_withheld"] == report["function_withheld"]
    assert all(row[k] is None for k in ("edv_ml", "esv_ml", "sv_ml", "ef_percent", "lv_mass_g"))
    assert row["ed_frame"] == 0 and row["slices_counted_ed"] is not None
    assert qc_summary({}) == (None, None, None)


def test_a_study_folder_holding_the_users_files_is_refused_before_any_work_and_redone_later(
        tmp_path: Path, capsys) -> None:
    from LVMyoSegLib.segmentation.cohort import CohortTable

    inputs, out = tmp_path / "studies", tmp_path / "out"
    inputs.mkdir()
    shutil.copy(SAMPLE, inputs / "s.nrrd")
    (out / "s").mkdir(parents=True)
    (out / "s" / "notes.txt").write_text("mine")
    assert main(["batch", str(inputs), "-o", str(out)]) == 0
    said = capsys.readouterr()
    assert "1 studies: 0 up to date, 1 refused for their output folder; nothing to segment." in said.out + said.err
    row = _read_csv(out / "cohort.csv")["s"]
    assert row["status"].startswith("refused: ") and "not an earlier LVMyoSeg result" in row["status"]
    assert row["input_sha256"] == "" and row["edv_ml"] == ""
    assert [p.name for p in (out / "s").iterdir()] == ["notes.txt"]
    (out / "s" / "notes.txt").unlink()  # the user cleared the folder: the next run does the study
    study = list_studies(inputs)[0]
    assert CohortTable(out, [study], {}).up_to_date(study, row["model_sha256"], int(row["members"]),
                                                    int(row["rotations"])) is None


def test_the_table_a_rerun_reads_is_written_before_the_one_users_read(tmp_path: Path) -> None:
    """A write cut between the two files (Ctrl-C) never leaves a CSV row the next run would redo."""
    from LVMyoSegLib.segmentation.cohort import TABLE_CSV, TABLE_JSON, CohortTable, Study, base_row

    study = Study("s", SAMPLE)
    table = CohortTable(tmp_path, [study], {})
    (tmp_path / TABLE_CSV).mkdir()  # the CSV cannot be replaced: the write stops there
    with pytest.raises(OSError):
        table.add(base_row(study, "ok", model_id="m", model_hash="h", members=1, rotations=1, input_hash="i"))
    assert [r["id"] for r in json.loads((tmp_path / TABLE_JSON).read_text())["studies"]] == [study.id]


def test_a_rerun_with_other_test_time_views_redoes_the_study(tmp_path: Path, tiny_bundle: Path, capsys) -> None:
    """The views are part of a row's identity, as the model and members are; rows of a table written
    before the column were segmented with 1 view; a view count other than 1, 2 or 4 is refused."""
    inputs, out = tmp_path / "studies", tmp_path / "out"
    inputs.mkdir()
    shutil.copy(SAMPLE, inputs / "s.nrrd")
    command = ["batch", str(inputs), "-o", str(out), "--model", str(tiny_bundle)]
    assert main(command) == 0  # the tiny bundle names no views: 1
    table = json.loads((out / "cohort.json").read_text())
    assert table["settings"]["rotations"] == 1 and table["studies"][0]["rotations"] == 1
    for row in table["studies"]:
        del row["rotations"]  # as an earlier version wrote it
    (out / "cohort.json").write_text(json.dumps(table))
    capsys.readouterr()
    assert main(command) == 0
    said = capsys.readouterr()
    assert "Nothing to do: all 1 studies are up to date" in said.out + said.err
    assert _read_csv(out / "cohort.csv")["s"]["rotations"] == "1"
    assert main(command + ["--rotations", "2"]) == 0
    said = capsys.readouterr()
    assert "1 studies: 0 up to date, 1 to segment" in said.out + said.err
    row = _read_csv(out / "cohort.csv")["s"]
    assert row["status"].startswith("ok") and row["rotations"] == "2"
    assert json.loads((out / "s" / "report.json").read_text())["model"]["rotations"] == 2
    before = (out / "cohort.json").read_bytes()
    assert main(command + ["--rotations", "3"]) == 2
    assert "--rotations 3: choose 1" in capsys.readouterr().err
    assert (out / "cohort.json").read_bytes() == before


# ------------------------------------------------------------------ slow: real batches


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, sunnybrook_root: Path):
    """The 5 real cines (DICOM folders) and 2 bad inputs in one folder, batched once with 1 worker."""
    base = tmp_path_factory.mktemp("cohort")
    inputs = base / "studies"
    inputs.mkdir()
    for study in sorted((sunnybrook_root / "dicom").iterdir()):
        (inputs / study.name).symlink_to(study, target_is_directory=True)
    _bad_inputs(inputs)
    out = base / "out"
    assert main(["batch", str(inputs), "-o", str(out), *FAST]) == 0
    return inputs, out


@pytest.mark.slow
def test_batch_gives_ok_and_refused_rows(cohort) -> None:
    inputs, out = cohort
    rows = _read_csv(out / "cohort.csv")
    real = sorted(p.name for p in inputs.iterdir() if p.is_dir())
    assert len(real) == 5 and sorted(rows) == sorted(real + ["one_phase", "truncated"])
    for name in real:
        row = rows[name]
        assert row["status"] == "ok", row
        assert 20 <= float(row["edv_ml"]) <= 400 and 5 <= float(row["ef_percent"]) <= 90
        assert int(row["slices_counted_ed"]) >= 1 and row["model_id"] == read_manifest(bundled_model_dir()).model_id
        assert output_complete(out / name)
    assert rows["one_phase"]["status"].startswith("refused: ") and "3D volume" in rows["one_phase"]["status"]
    assert rows["truncated"]["status"].startswith("refused: ") and "truncated" in rows["truncated"]["status"]
    assert not (out / "one_phase").exists() and not (out / "truncated").exists()
    table = json.loads((out / "cohort.json").read_text())
    assert table["settings"]["members"] == 1 and table["settings"]["rotations"] == 1
    assert table["columns"] == list(COLUMNS) and {r["rotations"] for r in table["studies"]} == {1}
    assert [r["id"] for r in table["studies"]] == list(rows)


@pytest.mark.slow
def test_batch_outputs_are_those_of_segment(cohort, tmp_path: Path) -> None:
    inputs, out = cohort
    study = sorted(p for p in inputs.iterdir() if p.is_dir())[2]
    assert main(["segment", str(study), "-o", str(tmp_path / "seg"), *FAST]) == 0
    batch, single = out / study.name, tmp_path / "seg"
    assert sorted(p.name for p in batch.iterdir()) == sorted(p.name for p in single.iterdir())
    for name in ("labels.nii.gz", "probabilities_myocardium.nii.gz", "probabilities_blood_pool.nii.gz"):
        a, b = read_4d(batch / name), read_4d(single / name)
        assert a.geometry.matches(b.geometry) and np.array_equal(a.frames, b.frames), name
    report_a, report_b = (json.loads((d / "report.json").read_text()) for d in (batch, single))
    for key in ("input", "model", "cardiac_function", "crop_transform", "outputs"):
        assert report_a[key] == report_b[key], key


@pytest.mark.slow
def test_rerun_does_nothing_and_a_deleted_study_is_redone_alone(cohort, capsys) -> None:
    inputs, out = cohort
    before = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/report.json")}
    table_before = _read_csv(out / "cohort.csv")
    capsys.readouterr()
    assert main(["batch", str(inputs), "-o", str(out), *FAST]) == 0
    said = capsys.readouterr()
    assert "Nothing to do: all 7 studies are up to date" in said.out + said.err
    assert {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/report.json")} == before

    redo = sorted(before)[1]
    shutil.rmtree(out / redo)
    assert main(["batch", str(inputs), "-o", str(out), *FAST]) == 0
    said = capsys.readouterr()
    assert "7 studies: 6 up to date, 1 to segment" in said.out + said.err
    after = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/report.json")}
    assert {k for k in after if after[k] != before[k]} == {redo}
    table_after = _read_csv(out / "cohort.csv")
    assert [{k: r[k] for k in NUMBERS} for r in table_after.values()] == \
        [{k: r[k] for k in NUMBERS} for r in table_before.values()]


@pytest.mark.slow
def test_two_worker_local_cluster_gives_the_same_numbers(cohort, tmp_path: Path) -> None:
    """A real LocalCluster of 2 worker processes, given the same studies as a CSV study list."""
    inputs, out = cohort
    rows = ["path,id"] + [f"{p},{p.name.split('.')[0]}" for p in sorted(inputs.iterdir())]
    (tmp_path / "studies.csv").write_text("\n".join(rows) + "\n")
    assert main(["batch", str(tmp_path / "studies.csv"), "-o", str(tmp_path / "out"), "--workers", "2", *FAST]) == 0
    one, two = _read_csv(out / "cohort.csv"), _read_csv(tmp_path / "out" / "cohort.csv")
    assert list(one) == list(two)
    for study in one:
        assert {k: one[study][k] for k in NUMBERS} == {k: two[study][k] for k in NUMBERS}, study
    assert json.loads((tmp_path / "out" / "cohort.json").read_text())["settings"]["workers"] == 2


# ------------------------------------------------------------------ slow: the background-process paths


def _three_studies(folder: Path, sunnybrook_root: Path) -> Path:
    rows = ["path,id"] + [f"{sunnybrook_root / 'dicom' / name},{name}"
                          for name in ("SCD0000301", "SCD0000401", "SCD0000501")]
    (folder / "studies.csv").write_text("\n".join(rows) + "\n")
    return folder / "studies.csv"


def _descendants(pid: int) -> list:
    import psutil

    return psutil.Process(pid).children(recursive=True)


def _finished_rows_are_whole(out: Path) -> dict[str, dict]:
    """The rows a rerun keeps (cohort.json's), each ok with its folder whole; the CSV lists no
    other (a kill between the two files' writes may leave it one row behind)."""
    rows = {r["id"]: r for r in json.loads((out / "cohort.json").read_text())["studies"]}
    assert rows and all(r["status"].startswith("ok") and output_complete(out / i) for i, r in rows.items())
    assert set(_read_csv(out / "cohort.csv")) <= set(rows)
    return rows


@pytest.mark.slow
def test_slicer_batch_job_reports_progress_cancel_stops_every_worker_and_a_rerun_ends_with_the_table(
        qt_core, tmp_path: Path, tiny_bundle: Path, sunnybrook_root: Path) -> None:
    """The Batch section's path: app.batch_job on app.jobs.JobRunner (a real QProcess), PROGRESS
    per study, Cancel (a kill) mid-batch, then a second job that does the rest and reads the table."""
    import time

    import psutil

    from LVMyoSegLib.app.batch_job import BatchResult, batch_job
    from LVMyoSegLib.app.jobs import JobRunner

    studies, out = _three_studies(tmp_path, sunnybrook_root), tmp_path / "out"
    runner, progress, events = JobRunner(qt_core), [], qt_core.QCoreApplication.processEvents
    job = runner.start(batch_job(studies, out, tiny_bundle, on_progress=progress.append))
    deadline = time.monotonic() + 600
    while not progress and not job.finished and time.monotonic() < deadline:
        runner.wait(job, events, 0.5)
    assert progress and not job.finished, job.log[-20:]
    fraction, message = progress[0].fraction, progress[0].message
    assert fraction == pytest.approx(1 / 3, abs=1e-3) and message.startswith("1/3 studies, 0 not ok, ETA ")
    assert "3 studies: 0 up to date, 3 to segment on 1 local worker process." in job.log
    children = _descendants(job.process.process.processId())
    assert children, "the batch runs its Dask worker in processes of its own"
    runner.cancel()
    assert job.finished and job.cancelled and job.result is None and job.process is None
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"worker processes left running after Cancel: {alive}"
    done = _finished_rows_are_whole(out)

    again = runner.start(batch_job(studies, out, tiny_bundle))
    assert runner.wait(again, events, 600) and again.error is None, again.log[-20:]
    assert again.result == BatchResult(out / "cohort.csv", 3, 0, 0)
    assert f"3 studies: {len(done)} up to date, {3 - len(done)} to segment on 1 local worker process." in again.log


def test_slicer_batch_job_refuses_before_a_process_starts(tmp_path: Path, tiny_bundle: Path) -> None:
    from LVMyoSegLib.app import install
    from LVMyoSegLib.app.batch_job import batch_job

    assert set(install.requirements("segment")) < set(install.requirements("batch"))
    (tmp_path / "list.txt").write_text("path\n")
    with pytest.raises(InputError, match="--rotations 3: choose 1"):
        batch_job(tmp_path, tmp_path / "o", tiny_bundle, rotations=3)
    for inputs, out, expected in [("", tmp_path / "o", "were not found"),
                                  (tmp_path / "nowhere", tmp_path / "o", "were not found"),
                                  (tmp_path / "list.txt", tmp_path / "o", "not a CSV study list"),
                                  (tmp_path, "", "No output folder"),
                                  (tmp_path, tmp_path, "is the studies' folder")]:
        with pytest.raises(InputError, match=expected):
            batch_job(inputs, out, tiny_bundle)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_study_folder_is_an_output_unit_foreign_files_refused_old_results_replaced(
        tmp_path: Path, tiny_bundle: Path) -> None:
    """OUT/<id> follows `segment`'s rules: a folder of the user's is refused and left alone; an
    earlier LVMyoSeg result (the batch redoes only out-of-date ones) is replaced whole."""
    from LVMyoSegLib.files import MARKER_NAME
    from LVMyoSegLib.model.trust import manifest_sha256
    from LVMyoSegLib.segmentation.batch import BatchSettings, ModelCache, segment_study
    from LVMyoSegLib.segmentation.cohort import Study

    settings = BatchSettings(tmp_path / "out", tiny_bundle, 1, "tiny-untrained", manifest_sha256(tiny_bundle), 1)
    cache = ModelCache(tiny_bundle, 1)
    cache.setup()
    study = Study("sample", SAMPLE)
    mine = settings.out / "sample"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    row = segment_study(study, settings, cache)
    assert row["status"].startswith("refused: ") and "not an earlier LVMyoSeg result" in row["status"], row
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and row["edv_ml"] is None

    (mine / "notes.txt").unlink()
    first = segment_study(study, settings, cache)
    assert first["status"].startswith("ok") and output_complete(mine), first
    marker = json.loads((mine / MARKER_NAME).read_text())
    assert marker["written_by"] == "lvmyoseg batch" and "report.json" in marker["files"]
    stamp = (mine / "report.json").stat().st_mtime_ns
    again = segment_study(study, settings, cache)
    assert again["status"] == first["status"] and (mine / "report.json").stat().st_mtime_ns != stamp
    assert not [p.name for p in settings.out.iterdir() if p.name.startswith(".")]  # no staging or lock left


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_a_rerun_does_the_rest(tmp_path: Path, tiny_bundle: Path,
                                                        sunnybrook_root: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    studies, out = _three_studies(tmp_path, sunnybrook_root), tmp_path / "out"
    command = [sys.executable, "-m", "LVMyoSegLib.cli", "batch", str(studies), "-o", str(out),
               "--model", str(tiny_bundle)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "LVMyoSeg"),
                                                       os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # its own process group, as a terminal's Ctrl-C has
    deadline = time.monotonic() + 600
    while not (out / "cohort.csv").is_file() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends: the whole foreground group
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert "run the same command again to do the rest" in stderr
    done = _finished_rows_are_whole(out)
    assert 1 <= len(done) < 3
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"3 studies: {len(done)} up to date, {3 - len(done)} to segment" in result.stderr
    assert len(_finished_rows_are_whole(out)) == 3


@pytest.mark.slow
def test_an_existing_dask_cluster_runs_the_same_tasks(tmp_path: Path, tiny_bundle: Path) -> None:
    """A real scheduler and worker started as `dask scheduler` / `dask worker` processes, as on a
    cluster; the batch only gets the scheduler's address."""
    import os
    import subprocess
    import sys
    import time

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "LVMyoSeg"),
                                                       os.environ.get("PYTHONPATH", "")]))
    scheduler_file = tmp_path / "scheduler.json"
    dask = [sys.executable, "-m", "dask"]
    scheduler = subprocess.Popen(dask + ["scheduler", "--scheduler-file", str(scheduler_file), "--port", "0",
                                         "--no-dashboard"], env=env, stderr=subprocess.DEVNULL)
    worker = None
    try:
        deadline = time.monotonic() + 120
        while not scheduler_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        worker = subprocess.Popen(dask + ["worker", address, "--nthreads", "2", "--no-dashboard"], env=env,
                                  stderr=subprocess.DEVNULL)
        (tmp_path / "one.csv").write_text(f"path,id\n{SAMPLE},sample\n")
        assert main(["batch", str(tmp_path / "one.csv"), "-o", str(tmp_path / "out"), "--model", str(tiny_bundle),
                     "--scheduler", address]) == 0
        row = _read_csv(tmp_path / "out" / "cohort.csv")["sample"]
        assert row["status"].startswith("ok") and output_complete(tmp_path / "out" / "sample")
        assert (tmp_path / "out" / "sample" / "labels.nrrd").is_file()  # NRRD in, NRRD out, as `segment`
        assert json.loads((tmp_path / "out" / "cohort.json").read_text())["settings"]["scheduler"] == address
        assert worker.poll() is None, "the cluster's worker outlives the batch"
    finally:
        for process in (worker, scheduler):
            if process is not None:
                process.terminate()
                process.wait(timeout=60)


@pytest.mark.slow
def test_a_worker_that_dies_fails_its_studies_and_the_batch_goes_on(tmp_path: Path, tiny_bundle: Path,
                                                                     sunnybrook_root: Path) -> None:
    """The worker process is killed mid-study (as the OOM killer would). With Dask's retries set to 0
    its studies become `failed` rows at once; the batch finishes, and a rerun redoes just those."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    studies, out = _three_studies(tmp_path, sunnybrook_root), tmp_path / "out"
    command = [sys.executable, "-m", "LVMyoSegLib.cli", "batch", str(studies), "-o", str(out),
               "--model", str(tiny_bundle)]
    env = dict(os.environ, DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="0",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "LVMyoSeg"),
                                           os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, victim = time.monotonic() + 600, None
    while victim is None and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)  # the worker: the child process that has loaded TensorFlow (and is segmenting)
        victim = next((p for p in psutil.Process(process.pid).children(recursive=True)
                       if p.memory_info().rss > 400e6), None)
    assert victim is not None and not (out / "cohort.csv").exists()
    victim.send_signal(signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr[-3000:]
    rows = _read_csv(out / "cohort.csv")
    assert len(rows) == 3 and all(r["status"].startswith("ok") or r["status"].startswith("failed: ") for r in rows.values())
    failed = {i for i, r in rows.items() if r["status"].startswith("failed: ")}
    assert failed and all("KilledWorker" in rows[i]["status"] for i in failed)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"3 studies: {3 - len(failed)} up to date, {len(failed)} to segment" in result.stderr
    assert len(_finished_rows_are_whole(out)) == 3
