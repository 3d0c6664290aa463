"""Training dataset format: add, read back, refuse bad or duplicate cases, detect tampering."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from LVMyoSegLib.cine import Cine
from LVMyoSegLib.errors import InputError, LabelError
from LVMyoSegLib.io.dataset import add_case, dataset_hash, list_cases, read_case
from LVMyoSegLib.io.phantom import make_synthetic_cine, sparsify_like_sunnybrook
from LVMyoSegLib.labels import Labels
from LVMyoSegLib.resources import SAMPLE_DIR


@pytest.fixture(scope="module")
def synthetic_case() -> tuple[Cine, Labels]:
    cine, labels = make_synthetic_cine(n_phases=8, n_slices=3, size=48, seed=3)
    return cine, sparsify_like_sunnybrook(labels)


def test_round_trip_and_no_overwrite(tmp_path: Path, synthetic_case) -> None:
    cine, labels = synthetic_case
    add_case(tmp_path, "a", cine, labels, edited_frames=[[0, 1]])
    first_hash = dataset_hash(tmp_path)
    case = read_case(tmp_path, "a")
    assert np.array_equal(case.labels.label_map, labels.label_map)
    assert np.array_equal(case.labels.known, labels.known)
    assert np.allclose(case.cine.frames, cine.frames, atol=1e-5)
    assert case.cine.geometry.matches(cine.geometry)
    assert case.info["edited_frames"] == [[0, 1]]
    with pytest.raises(InputError, match="already exists"):
        add_case(tmp_path, "a", cine, labels)
    add_case(tmp_path, "b", cine, labels)
    assert list_cases(tmp_path) == ["a", "b"]
    assert dataset_hash(tmp_path) != first_hash


def test_hash_is_of_the_training_content_not_of_who_exported_it_when(tmp_path: Path, synthetic_case) -> None:
    cine, labels = synthetic_case
    for name in ("monday", "tuesday"):
        add_case(tmp_path / name, "a", cine, labels)
    info_path = tmp_path / "tuesday" / "cases" / "a" / "case.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "exported_by": "someone else", "exported_at": "2031-01-01T00:00:00"}))
    assert dataset_hash(tmp_path / "tuesday") == dataset_hash(tmp_path / "monday")  # a re-export resumes a run
    known = np.asarray(info["known"])
    known[0, 0, 0] = 1 - known[0, 0, 0]
    info_path.write_text(json.dumps({**info, "known": known.tolist()}))
    assert dataset_hash(tmp_path / "tuesday") != dataset_hash(tmp_path / "monday")  # which frames train does count


def test_bad_cases_are_refused_and_leave_nothing(tmp_path: Path, synthetic_case) -> None:
    cine, labels = synthetic_case
    other = Cine(cine.frames[:, :, :40, :40], cine.geometry, cine.trigger_times_ms)
    with pytest.raises(LabelError, match="shape"):
        add_case(tmp_path, "wrong-grid", other, labels)
    empty = Labels(np.zeros_like(labels.label_map), labels.known, source="empty export")
    with pytest.raises(LabelError, match="none holds"):
        add_case(tmp_path, "empty", cine, empty)
    with pytest.raises(LabelError, match="only 0"):
        Labels(np.full_like(labels.label_map, 3), labels.known)
    with pytest.raises(InputError, match="Case id"):
        add_case(tmp_path, "../escape", cine, labels)
    assert list(tmp_path.rglob("*")) == []


def test_tampered_case_is_refused(tmp_path: Path, synthetic_case) -> None:
    cine, labels = synthetic_case
    case_dir = add_case(tmp_path, "a", cine, labels)
    data = bytearray((case_dir / "labels.nrrd").read_bytes())
    data[-5] ^= 0xFF
    (case_dir / "labels.nrrd").write_bytes(bytes(data))
    with pytest.raises(InputError, match="labels.nrrd"):
        read_case(tmp_path, "a")


def test_bundled_sample_is_a_valid_real_case() -> None:
    case = read_case(SAMPLE_DIR, "SCD0000101")
    assert case.cine.frames.shape == (20, 12, 160, 160)
    assert case.labels.known[:, :, 0].sum() == 9   # myocardium on 9 slices at ED
    assert case.labels.known[:, :, 1].sum() == 18  # cavity on 9 slices at ED and ES
    assert np.all(case.cine.frames == np.round(case.cine.frames))  # original DICOM pixel values
