"""On-disk training dataset: a folder of cases, each a cine with its (sparse) labels.

Layout::

    DATASET/
      dataset.json              manifest: format, version, and one entry per case
      cases/<case_id>/cine.nrrd      4D cine (Slicer volume-sequence NRRD)
      cases/<case_id>/labels.nrrd    4D label map on the cine's grid (0/1/2)
      cases/<case_id>/case.json      which frames/channels are labelled, provenance

``case.json`` holds ``known`` as nested lists ``[T][Z][2]`` of 0/1 (channels
myocardium, blood pool), the source, who exported it and when, the frames the
user edited or reviewed (if any), free notes, and ``complete_stacks`` (the labelled
frames' labels cover every LV slice, as an expert's whole-stack contours do). ``dataset.json`` records each
case's files with their SHA-256, so a damaged or altered case is refused.
Cases are added, never overwritten.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..cine import Cine
from ..errors import InputError, LabelError
from ..files import atomic_folder, is_folder_name, read_json, sha256_file, write_json_atomic
from ..labels import CHANNELS, Labels

DATASET_FORMAT = "lvmyoseg-dataset"
DATASET_FORMAT_VERSION = 1
DATASET_MANIFEST = "dataset.json"  # a dataset folder's manifest
CASE_FILES = ("cine.nrrd", "labels.nrrd", "case.json")


@dataclass(frozen=True)
class Case:
    """One training case: cine, labels and provenance."""

    case_id: str
    cine: Cine
    labels: Labels
    info: dict[str, Any] = field(default_factory=dict)


def _read_manifest(dataset_dir: Path) -> dict[str, Any]:
    path = dataset_dir / DATASET_MANIFEST
    if not path.is_file():
        return {"format": DATASET_FORMAT, "format_version": DATASET_FORMAT_VERSION, "cases": []}
    data = read_json(path, "The dataset manifest is damaged; export the dataset again.")
    if data.get("format") != DATASET_FORMAT or data.get("format_version") != DATASET_FORMAT_VERSION:
        raise InputError(f"{path} is not an LVMyoSeg dataset manifest of version "
                         f"{DATASET_FORMAT_VERSION}; pick a folder made by LVMyoSeg's export.")
    return data


def validate_case(cine: Cine, labels: Labels) -> None:
    """Refuse labels that do not fit the cine, are empty, or mark labelled frames without content."""
    labels.check_fits(cine)
    for c, name in enumerate(CHANNELS):
        known_tz = np.argwhere(labels.known[:, :, c])
        if len(known_tz) and not any(labels.channel(name)[t, z].any() for t, z in known_tz):
            raise LabelError(f"Labels ({labels.source}) mark {len(known_tz)} frames as having "
                             f"{name} labels but none holds a {name} voxel; the export is empty.")


def add_case(dataset_dir: Path, case_id: str, cine: Cine, labels: Labels, *, source: str = "",
             edited_frames: list[list[int]] | None = None, notes: str = "",
             complete_stacks: bool = False) -> Path:
    """Add a case to ``dataset_dir`` (created if needed); never overwrites an existing case.

    ``complete_stacks``: the labels cover every LV slice at each labelled frame (an expert's
    whole-stack contours), so slices beyond the base are known to lie outside the LV.
    """
    from .volume_files import write_4d

    if not is_folder_name(case_id):
        raise InputError(f"Case id {case_id!r} must be letters, digits, '.', '_' or '-' (max 100).")
    validate_case(cine, labels)
    dataset_dir = Path(dataset_dir)
    manifest = _read_manifest(dataset_dir)
    case_dir = dataset_dir / "cases" / case_id
    listed = any(c["case_id"] == case_id for c in manifest["cases"])
    if case_dir.exists() and not listed:
        raise InputError(f"{case_dir} exists but {dataset_dir / DATASET_MANIFEST} does not list it: an earlier "
                         "export was interrupted. Delete that folder and add the case again.")
    if listed or case_dir.exists():
        raise InputError(f"Case {case_id} already exists in {dataset_dir}; cases are never "
                         "overwritten. Choose another case id.")
    info = {
        "case_id": case_id,
        "source": source or cine.source,
        "exported_by": getpass.getuser(),
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "channels": list(CHANNELS),
        "known": labels.known.astype(int).tolist(),
        "edited_frames": edited_frames or [],
        "notes": notes,
        "complete_stacks": bool(complete_stacks),
    }
    with atomic_folder(case_dir) as staging:
        write_4d(staging / "cine.nrrd", cine.frames, cine.geometry, cine.trigger_times_ms, kind="image")
        write_4d(staging / "labels.nrrd", labels.label_map, cine.geometry, cine.trigger_times_ms,
                 kind="labels")
        write_json_atomic(staging / "case.json", info, indent=2)
        hashes = {name: sha256_file(staging / name) for name in CASE_FILES}
    manifest["cases"].append({k: info[k] for k in ("case_id", "source", "exported_by", "exported_at")}
                             | {"files": hashes})
    write_json_atomic(dataset_dir / DATASET_MANIFEST, manifest, indent=2)
    return case_dir


def list_cases(dataset_dir: Path) -> list[str]:
    """Case ids of a dataset, in the order they were added."""
    dataset_dir = Path(dataset_dir)
    if not (dataset_dir / DATASET_MANIFEST).is_file():
        raise InputError(f"{dataset_dir} has no {DATASET_MANIFEST}: it is not an LVMyoSeg training "
                         "dataset. Create one with `lvmyoseg sunnybrook-dataset` or the LV Myocardium Trainer module's Export for training.")
    return [c["case_id"] for c in _read_manifest(dataset_dir)["cases"]]


def read_case(dataset_dir: Path, case_id: str) -> Case:
    """Read one case, verifying its files against the dataset manifest."""
    from .volume_files import read_4d, read_labels_4d

    dataset_dir = Path(dataset_dir)
    entry = next((c for c in _read_manifest(dataset_dir)["cases"] if c["case_id"] == case_id), None)
    if entry is None:
        raise InputError(f"Case {case_id} is not listed in {dataset_dir / DATASET_MANIFEST}.")
    case_dir = dataset_dir / "cases" / case_id
    for name, digest in entry["files"].items():
        path = case_dir / name
        if not path.is_file() or sha256_file(path) != digest:
            raise InputError(f"{path} is missing or differs from its SHA-256 in {DATASET_MANIFEST}; the "
                             "case was damaged or edited outside LVMyoSeg. Export it again.")
    info = read_json(case_dir / "case.json", "Export the case again.")
    cine = read_4d(case_dir / "cine.nrrd")
    label_map = read_labels_4d(case_dir / "labels.nrrd", cine)
    labels = Labels(label_map, np.asarray(info["known"], dtype=bool), source=str(case_dir))
    validate_case(cine, labels)
    return Case(case_id, cine, labels, info)


PROVENANCE_FIELDS = ("exported_by", "exported_at")  # who wrote a case and when: not what trains


def dataset_hash(dataset_dir: Path) -> str:
    """SHA-256 of what a model trains on: each case's id, cine and labels files and ``case.json``
    without its provenance. The same cases exported again (another day, another user) hash alike,
    so a run resumes on them; a changed image, label or set of known frames gives another hash."""
    dataset_dir = Path(dataset_dir)
    content = []
    for case_id in list_cases(dataset_dir):
        case_dir = dataset_dir / "cases" / case_id
        info = {k: v for k, v in read_json(case_dir / "case.json", "Export the case again.").items()
                if k not in PROVENANCE_FIELDS}
        content.append({"case_id": case_id, "cine.nrrd": sha256_file(case_dir / "cine.nrrd"),
                        "labels.nrrd": sha256_file(case_dir / "labels.nrrd"), "case.json": info})
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
