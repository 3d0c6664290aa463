"""The command line's promises (docs/PROMISES.md), through real `lvmyoseg` processes: refusals come
before any work with one message and exit code 2; nothing of the user's is changed; nothing is
left behind; two runs never mix in one folder; Ctrl-C ends with exit code 130 and no traceback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from test_output_folder import hashes, leftovers

from LVMyoSegLib.cine import Geometry
from LVMyoSegLib.files import MARKER_NAME
from LVMyoSegLib.io.volume_files import write_4d
from LVMyoSegLib.resources import sample_case_dir

SAMPLE = sample_case_dir() / "cine.nrrd"
LIB = Path(__file__).resolve().parents[1] / "LVMyoSeg"
TRAINING_REFUSALS = [
    (["--members", "0"], "--members 0: an ensemble needs at least 1 member"),
    (["--members", "-2"], "--members -2"),
    (["--cnn-epochs", "0", "--rnn-epochs", "0"], "training from scratch needs at least 1 epoch"),
    (["--pixel-mm", "0"], "pixel_mm 0"),
    (["--variants", "foo"], "unknown variant(s) foo; choose from cnn, one_level, multi_level"),
    (["--rotations", "3"], "--rotations 3: choose 1 (no rotation), 2 (upright and half-turned) or 4"),
    (["--augment-blur", "-1"], "--augment-blur -1.0 must lie between 0 (off, the default) and 3 pixels"),
    (["--boundary-weight", "-1"], "--boundary-weight -1.0 must lie between 0 (off, the default) and 20"),
]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{LIB}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "TF_CPP_MIN_LOG_LEVEL": "3"}


def lvmyoseg(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "LVMyoSegLib.cli", *map(str, args)], cwd=cwd, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(*args: str, cwd: Path, timeout: float = 300) -> tuple[int, str, str, float]:
    t0 = time.perf_counter()
    proc = lvmyoseg(*args, cwd=cwd)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err, time.perf_counter() - t0


def refused(tmp_path: Path, args: list, *words: str) -> str:
    """``lvmyoseg args`` exits 2 with one message holding ``words``; nothing under tmp_path changed."""
    before = hashes(tmp_path)
    code, out, err, _ = run(*args, cwd=tmp_path)
    assert code == 2, (out, err)
    ours = [line for line in err.splitlines() if line.startswith("lvmyoseg:")]  # TensorFlow may log too
    assert "Traceback" not in err and len(ours) == 1 and ours[0].startswith("lvmyoseg: error: "), err
    for word in words:
        assert word in ours[0], f"{word!r} not in: {err}"
    assert hashes(tmp_path) == before and leftovers(tmp_path) == []
    return err


def test_segment_into_a_dataset_case_keeps_the_expert_labels(tmp_path, tiny_bundle) -> None:
    case = tmp_path / "ds" / "cases" / "SCD0000101"
    case.mkdir(parents=True)
    (case / "cine.nrrd").write_bytes(SAMPLE.read_bytes())
    (case / "labels.nrrd").write_bytes(b"expert labels stand-in")
    refused(tmp_path, ["segment", SAMPLE, "-o", case, "--model", tiny_bundle],
            str(case), "not an earlier LVMyoSeg result", "labels.nrrd", "--overwrite")
    refused(tmp_path, ["segment", case / "cine.nrrd", "-o", case, "--model", tiny_bundle, "--overwrite"],
            "holds the input", "separate output folder")


@pytest.mark.parametrize("args, words", [
    (["--threshold", "1.5"], "--threshold 1.5 must lie strictly between 0 and 1"),
    (["--members", "0"], "--members 0: the model"),
    pytest.param(["--device", "cuda"], "has no cuda execution provider",
                 marks=pytest.mark.skipif("CUDAExecutionProvider" in onnxruntime.get_available_providers(),
                                          reason="this ONNX Runtime has CUDA")),
])
def test_segment_arguments_are_refused_before_any_work(tmp_path, tiny_bundle, args, words) -> None:
    err = refused(tmp_path, ["segment", SAMPLE, "-o", tmp_path / "seg", "--model", tiny_bundle, *args], words)
    assert not (tmp_path / "seg").exists(), err


@pytest.mark.parametrize("case", ["file", "parent_file", "dangling", "proc"])
def test_unusable_output_paths_get_a_message(tmp_path, tiny_bundle, case) -> None:
    (tmp_path / "a_file").write_text("user data")
    if case == "dangling":
        (tmp_path / "link").symlink_to(tmp_path / "gone")
    out = {"file": "a_file", "parent_file": "a_file/seg", "dangling": "link", "proc": "/proc/lvmyoseg/seg"}[case]
    words = {"file": "is an existing file", "parent_file": "is a file", "dangling": "does not exist",
             "proc": "Cannot create the output folder"}[case]
    refused(tmp_path, ["segment", SAMPLE, "-o", out, "--model", tiny_bundle], words)


def _read_only_bind(folder: Path) -> list[str]:
    """A command prefix that runs its command with ``folder`` bind-mounted read-only onto itself, in a
    user and mount namespace of its own (no privileges needed where the kernel allows them)."""
    return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
            'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" && exec "$@"', str(folder)]


def _can_bind_read_only(tmp_path: Path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    try:
        done = subprocess.run([*_read_only_bind(probe), "touch", str(probe / "x")], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        ok = not (probe / "x").exists()
        shutil.rmtree(probe)
    return ok and "Read-only file system" in done.stderr


def test_output_on_a_read_only_filesystem_gets_a_message(tmp_path, tiny_bundle) -> None:
    if not _can_bind_read_only(tmp_path):
        pytest.skip("this machine allows no unprivileged read-only bind mount (unshare)")
    data = tmp_path / "data"
    data.mkdir()
    (data / "labels.nrrd").write_bytes(b"the user's own labels")
    before = hashes(tmp_path)
    done = subprocess.run([*_read_only_bind(data), sys.executable, "-m", "LVMyoSegLib.cli", "segment",
                           str(SAMPLE), "-o", str(data / "seg"), "--model", str(tiny_bundle)],
                          capture_output=True, text=True, env=_env(), timeout=300)
    ours = [line for line in done.stderr.splitlines() if line.startswith("lvmyoseg:")]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(ours) == 1 and "Read-only file system" in ours[0] and "Choose a folder you can write to" in ours[0]
    assert hashes(tmp_path) == before and leftovers(data) == []


def _cine(path: Path, frames: np.ndarray, spacing=(1.4, 1.4, 8.0), direction=None) -> Path:
    geometry = Geometry(spacing, (0.0, 0.0, 0.0), np.eye(3) if direction is None else direction)
    write_4d(path, frames.astype(np.float32), geometry, np.arange(frames.shape[0]) * 40.0)
    return path


def _noise(t=4, z=8, y=160, x=160) -> np.ndarray:
    return np.random.default_rng(0).random((t, z, y, x)).astype(np.float32)


@pytest.mark.parametrize("kind, words", [
    ("zero", "Every voxel of"),
    ("constant", "has the value 700: the image is empty"),
    ("still", "phases of"),
    ("small", "too small to hold a heart"),
    ("long_axis", "has 160 slices; a short-axis cine stack has at most 40"),
    ("sheared", "lies 0 degrees from the image plane"),
])
def test_images_that_are_not_a_short_axis_cine_are_refused(tmp_path, tiny_bundle, kind, words) -> None:
    frames = {"zero": np.zeros((4, 8, 160, 160)), "constant": np.full((4, 8, 160, 160), 700.0),
              "still": np.repeat(_noise(t=1), 4, axis=0), "small": _noise(y=20, x=20),
              "long_axis": _noise(t=3, z=160, y=32, x=160), "sheared": _noise()}[kind]
    spacing = (1.4, 5.0, 1.4) if kind == "long_axis" else (1.4, 1.4, 8.0)
    direction = np.array([[1.0, 0, 1], [0, 1, 0], [0, 0, 0.001]]) if kind == "sheared" else None
    path = _cine(tmp_path / "cine.nrrd", frames, spacing, direction)
    refused(tmp_path, ["segment", path, "-o", tmp_path / "seg", "--model", tiny_bundle], words, "cine.nrrd")
    assert not (tmp_path / "seg").exists()


@pytest.mark.slow  # each process imports TensorFlow
@pytest.mark.parametrize("args, words", TRAINING_REFUSALS)
def test_training_arguments_are_refused_before_any_work(tmp_path, args, words) -> None:
    (tmp_path / "ds").mkdir()
    refused(tmp_path, ["train", "ds", "-o", "bundle", "--run-dir", "run", *args], words)
    refused(tmp_path, ["loo", "ds", "-o", "run", *args], words)
    refused(tmp_path, ["cv", "frames", "--cines", "ds", "-o", "run", *args], words)
    assert not (tmp_path / "run").exists() and not (tmp_path / "bundle").exists()


@pytest.mark.slow
def test_cross_validation_of_missing_frames_is_refused_before_any_work(tmp_path) -> None:
    (tmp_path / "frames").mkdir()
    refused(tmp_path, ["cv", "frames", "-o", "run"], "has no frames.csv", "README.md for the layout")
    refused(tmp_path, ["cv", "frames", "--cines", "nowhere", "-o", "run"], "nowhere does not exist")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_train_into_an_existing_folder_is_refused_before_training(tmp_path) -> None:
    (tmp_path / "ds").mkdir()
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "keep.txt").write_text("mine")
    _, _, err, seconds = run("train", "ds", "-o", "bundle", "--run-dir", "run", cwd=tmp_path)
    assert "bundle already exists; it is never overwritten" in err and seconds < 30
    assert not (tmp_path / "run").exists()


HOLDER = """
import sys, time
from pathlib import Path
from LVMyoSegLib.files import output_folder
with output_folder(Path(sys.argv[1])) as staging:
    (staging / "report.json").write_text("patient A")
    print("holding", flush=True)
    sys.stdin.readline()
"""


def _holder(out: Path, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(LIB)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], cwd=cwd, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_a_second_run_into_a_busy_folder_is_refused_and_a_killed_run_leaves_nothing(tmp_path, tiny_bundle) -> None:
    out = tmp_path / "seg"
    holder = _holder(out, tmp_path)  # a real process writing into seg/ (e.g. a cohort run)
    try:
        code, _, err, _ = run("segment", SAMPLE, "-o", out, "--model", tiny_bundle, cwd=tmp_path)
        assert code == 2 and "Another LVMyoSeg run is writing to" in err and "Traceback" not in err
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0 and (out / "report.json").read_text() == "patient A"
    assert leftovers(tmp_path) == []

    killed = _holder(tmp_path / "pre", tmp_path)
    killed.kill()  # SIGKILL while writing: its staging folder stays behind ...
    killed.communicate(timeout=60)
    assert any(".lvmyoseg-staging." in name for name in leftovers(tmp_path))
    code, _, err, _ = run("preprocess", SAMPLE, "-o", tmp_path / "pre", cwd=tmp_path)
    assert code == 0, err  # ... and the next run into that folder removes it
    assert leftovers(tmp_path) == [] and (tmp_path / "pre" / "preprocessing.png").is_file()


@pytest.mark.slow
def test_two_concurrent_segment_runs_never_mix(tmp_path, tiny_bundle) -> None:
    out = tmp_path / "seg"
    procs = [lvmyoseg("segment", SAMPLE, "-o", out, "--model", tiny_bundle, "--members", "1", cwd=tmp_path)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 2], [2, 3]), results  # the winner: 0, or 3 when the untrained model's function is withheld
    assert "Another LVMyoSeg run is writing to" in [err for code, err in results if code == 2][0]
    written = json.loads((out / MARKER_NAME).read_text())["files"]
    assert sorted(written) == sorted(p.name for p in out.iterdir() if p.name != MARKER_NAME)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("signum, code, words", [(signal.SIGINT, 130, "interrupted"),
                                                 (signal.SIGTERM, 143, "stopped (SIGTERM)")])
def test_ctrl_c_ends_with_130_and_no_traceback(tmp_path, tiny_bundle, signum, code, words) -> None:
    before = hashes(tmp_path)
    proc = lvmyoseg("segment", SAMPLE, "-o", tmp_path / "seg", "--model", tiny_bundle, cwd=tmp_path)
    deadline = time.time() + 120
    while not leftovers(tmp_path) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)  # until it works inside its staging folder
    time.sleep(0.5)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert words in err and "was not written" in err and "Traceback" not in err
    assert hashes(tmp_path) == before and leftovers(tmp_path) == []


@pytest.mark.slow
def test_train_register_pins_the_new_version(tmp_path, capsys) -> None:
    from LVMyoSegLib.cli.main import main
    from LVMyoSegLib.io import dataset, phantom
    from LVMyoSegLib.model.registry import list_models
    from LVMyoSegLib.model.trust import PINS_NAME, bundle_trust

    for seed in range(2):
        cine, labels = phantom.make_synthetic_cine(n_phases=4, n_slices=2, size=64, seed=seed)
        dataset.add_case(tmp_path / "ds", f"phantom{seed}", cine, labels)
    train = ["train", str(tmp_path / "ds"), "--register", "--registry", str(tmp_path / "models"),
             "--run-dir", str(tmp_path / "run"), "--variant", "cnn", "--members", "1",
             "--cnn-epochs", "1", "--width", "2", "--crop-size", "32", "--pixel-mm", "2"]
    (tmp_path / "loo_results.json").write_text('{"settings": {}}')  # no "overall": not a LOO result
    assert main([*train, "--model-id", "v0", "--loo-results", str(tmp_path / "loo_results.json")]) == 2
    assert "is not a results file of `lvmyoseg loo`" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "models").exists()
    cv = LIB.parent / "docs" / "results" / "cv36_v1" / "cv_results.json"  # the committed 36-heart CV
    assert main([*train, "--model-id", "v1", "--cv-results", str(cv)]) == 0
    assert (tmp_path / "models" / PINS_NAME).is_file()
    assert bundle_trust(tmp_path / "models" / "v1").anchor == "registry"
    entries = list_models(tmp_path / "models")
    assert [(e.model_id, e.verified) for e in entries][1] == ("v1", True)
    summary = json.loads(cv.read_text())
    carried = json.loads((tmp_path / "models" / "v1" / "manifest.json").read_text())["metrics"]
    assert carried == {"cross_validation": {k: summary[k] for k in ("overall", "by_group", "folds_done",
                                                                    "folds_total")}}
    assert entries[1].metrics == f"CV DSC {summary['overall']['dsc']['mean']:.3f}"
