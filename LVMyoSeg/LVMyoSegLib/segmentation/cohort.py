"""A cohort of studies and its table of results (``lvmyoseg batch``), without any scheduler.

- :func:`list_studies`: the studies of a folder (each sub-folder or 4D volume file one study)
  or of a CSV with a ``path`` column and optional ``id`` and ``rv_insertion`` columns;
- :func:`input_sha256` / :func:`LVMyoSegLib.model.trust.manifest_sha256`: what a finished row is checked against on a rerun;
- :func:`study_row`: one table row from the ``report.json`` ``segment`` wrote for a study;
- :class:`CohortTable`: ``cohort.csv`` and ``cohort.json``, rewritten atomically after every
  study, and which earlier rows are still up to date.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import InputError
from ..files import atomic_path, read_json, sha256_file, write_json_atomic
from ..io.volume_files import VOLUME_SUFFIXES, volume_suffix

TABLE_CSV = "cohort.csv"
TABLE_JSON = "cohort.json"
COLUMNS = (
    "id", "source", "status", "T", "Z", "spacing_x_mm", "spacing_y_mm", "spacing_z_mm",
    "edv_ml", "esv_ml", "sv_ml", "ef_percent", "lv_mass_g", "heart_rate_bpm", "ed_frame", "es_frame",
    "slices_counted_ed", "slices_counted_es", "function_withheld", "qc_flagged_frames",
    "qc_flagged_slices", "qc_worst_score", "runtime_s", "model_id", "model_sha256", "members", "rotations",
    "input_sha256", "rv_insertion", "output",
)


@dataclass(frozen=True)
class Study:
    """One study of a batch: its id (the output sub-folder's name), its input and RV insertion point."""

    id: str
    path: Path
    rv_insertion: tuple[float, float, float] | None = None

    def rv_text(self) -> str:
        return "" if self.rv_insertion is None else " ".join(f"{v:g}" for v in self.rv_insertion)


def _study_id(path: Path) -> str:
    suffix = volume_suffix(path) if path.is_file() else None
    return path.name[: -len(suffix)] if suffix else path.name


def _check_ids(studies: list[Study], where: Path) -> list[Study]:
    seen: dict[str, Path] = {}
    for s in studies:
        if not s.id or s.id in (".", "..") or s.id.startswith(".") or any(c in s.id for c in "/\\:"):
            raise InputError(f"Study id {s.id!r} ({s.path}) in {where} cannot name a folder; give it an id "
                             "without slashes, colons or a leading dot (the CSV's `id` column).")
        if s.id in seen:
            raise InputError(f"Two studies in {where} have the id {s.id!r} ({seen[s.id]} and {s.path}); "
                             "give them distinct ids in an `id` column of a CSV.")
        seen[s.id] = s.path
    if not studies:
        raise InputError(f"{where} holds no studies: give a folder of DICOM folders or 4D volume files "
                         f"({', '.join(VOLUME_SUFFIXES)}), or a CSV with a `path` column.")
    return studies


def _parse_rv(text: str, row: int, where: Path) -> tuple[float, float, float] | None:
    if not text.strip():
        return None
    try:
        values = tuple(float(v) for v in text.replace(",", " ").replace(";", " ").split())
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise InputError(f"Row {row} of {where}: rv_insertion {text!r} is not three numbers 'X Y Z' "
                         "(patient LPS mm); fix it or leave it empty.")
    return values  # type: ignore[return-value]


def _studies_from_csv(path: Path) -> list[Study]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"Cannot read the study list {path}: {exc}.") from None
    if not rows or "path" not in rows[0]:
        raise InputError(f"{path} has no `path` column (found: {', '.join(rows[0]) if rows else 'no rows'}); "
                         "the study list needs `path`, and may have `id` and `rv_insertion`.")
    studies = []
    for i, row in enumerate(rows, start=2):
        text = (row.get("path") or "").strip()
        if not text:
            raise InputError(f"Row {i} of {path} has an empty `path`; fill it or delete the row.")
        study_path = Path(text) if Path(text).is_absolute() else path.parent / text
        studies.append(Study((row.get("id") or "").strip() or _study_id(study_path), study_path,
                             _parse_rv(row.get("rv_insertion") or "", i, path)))
    return studies


def list_studies(inputs: Path, exclude: Path | None = None) -> list[Study]:
    """The studies of ``inputs``: a CSV study list, or a folder whose non-hidden sub-folders and
    volume files are one study each (``exclude``, e.g. the output folder, is left out)."""
    inputs = Path(inputs).absolute()
    if not inputs.exists():
        raise InputError(f"{inputs} does not exist; give a folder of studies or a CSV study list.")
    if inputs.is_file():
        if inputs.suffix.lower() != ".csv":
            raise InputError(f"{inputs} is a file but not a .csv study list; give a folder of studies "
                             "or a CSV with a `path` column (to segment one study, use `lvmyoseg segment`).")
        return _check_ids(_studies_from_csv(inputs), inputs)
    skip = Path(exclude).resolve() if exclude is not None else None
    entries = sorted((p for p in inputs.iterdir() if not p.name.startswith(".")
                      and (p.is_dir() or volume_suffix(p)) and p.resolve() != skip), key=lambda p: p.name)
    return _check_ids([Study(_study_id(p), p) for p in entries], inputs)


def input_sha256(path: Path) -> str:
    """SHA-256 of a study's input: a file's bytes, or a folder's non-hidden files (relative
    names and bytes, in name order)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)):
        digest.update(f.relative_to(path).as_posix().encode() + b"\0" + sha256_file(f).encode())
    return digest.hexdigest()


def output_complete(folder: Path) -> bool:
    """Whether ``folder`` holds a readable ``report.json`` and every output it lists."""
    try:
        report = json.loads((Path(folder) / "report.json").read_text(encoding="utf-8"))
        return all((Path(folder) / name).is_file() for name in report["outputs"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _num(value: Any, digits: int = 3) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return round(float(value), digits)
    return None


def slices_counted(function: dict, frame: int | None) -> int | None:
    """Slices whose volume counts at ``frame``: the counted rows of the report's
    ``cardiac_function.slices.rows`` (:mod:`LVMyoSegLib.analysis.slice_selection`); None without them."""
    rows = (function.get("slices") or {}).get("rows")
    if frame is None or not isinstance(rows, list):
        return None
    return sum(1 for r in rows if r.get("frame") == frame and r.get("counted") is True)


def qc_summary(report: dict) -> tuple[int | None, int | None, float | None]:
    """(flagged frames, flagged frame-slices, worst score) from the report's ``qc`` section
    (:func:`LVMyoSegLib.analysis.qc.quality_control`); all None without one. A frame is flagged when one
    of its counted slices scores at least :data:`~LVMyoSegLib.analysis.qc.FLAG_SCORE` (its ``frame_scores``
    entry is that frame's worst counted slice)."""
    from ..analysis.qc import FLAG_SCORE

    qc = report.get("qc")
    if not isinstance(qc, dict):
        return None, None, None
    scores = [v for v in qc.get("frame_scores") or [] if isinstance(v, (int, float)) and math.isfinite(v)]
    flagged = qc.get("flagged_slices")
    return (sum(v >= FLAG_SCORE for v in scores), int(flagged) if isinstance(flagged, int) else None,
            round(max(scores), 4) if scores else None)


def base_row(study: Study, status: str, *, model_id: str, model_hash: str, members: int, rotations: int,
             input_hash: str | None, runtime_s: float | None = None) -> dict[str, Any]:
    """A row with the study's identity and status and empty measurements."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(id=study.id, source=str(study.path), status=status, model_id=model_id,
               model_sha256=model_hash, members=members, rotations=rotations, input_sha256=input_hash,
               rv_insertion=study.rv_text(), runtime_s=_num(runtime_s, 2))
    return row


def study_row(study: Study, out: Path, **identity: Any) -> dict[str, Any]:
    """The ``ok`` row of a study ``segment`` wrote into ``out`` (from its ``report.json``). Withheld
    function values (``function_withheld``: the reason) leave the function columns empty and
    make the status ``ok (function withheld)``."""
    report = read_json(Path(out) / "report.json", "Segment the study again.")
    row = base_row(study, "ok", **identity)
    info, function = report["input"], report.get("cardiac_function") or {}
    sx, sy, sz = info["spacing_mm_xyz"]
    ed, es = function.get("ed_frame"), function.get("es_frame")
    flagged_frames, flagged_slices, worst = qc_summary(report)
    withheld = report.get("function_withheld")
    row.update(T=info["T"], Z=info["Z"], spacing_x_mm=_num(sx, 4), spacing_y_mm=_num(sy, 4),
               spacing_z_mm=_num(sz, 4), edv_ml=_num(function.get("edv_ml")),
               esv_ml=_num(function.get("esv_ml")), sv_ml=_num(function.get("sv_ml")),
               ef_percent=_num(function.get("ef_percent"), 2), lv_mass_g=_num(function.get("lv_mass_g")),
               heart_rate_bpm=_num(function.get("heart_rate_bpm"), 1), ed_frame=ed, es_frame=es,
               slices_counted_ed=slices_counted(function, ed), slices_counted_es=slices_counted(function, es),
               function_withheld=withheld or None, qc_flagged_frames=flagged_frames,
               qc_flagged_slices=flagged_slices, qc_worst_score=worst, output=str(out))
    if withheld:
        row["status"] = "ok (function withheld)"
        for key in ("edv_ml", "esv_ml", "sv_ml", "ef_percent", "lv_mass_g"):
            row[key] = None
    return row


def is_ok(row: dict[str, Any]) -> bool:
    return str(row.get("status", "")).startswith("ok")


class CohortTable:
    """``OUT/cohort.csv`` and ``OUT/cohort.json`` (rows plus the run's settings), in study order."""

    def __init__(self, out: Path, studies: Sequence[Study], settings: dict[str, Any]) -> None:
        self.out = Path(out)
        self.order = {s.id: i for i, s in enumerate(studies)}
        self.settings = settings
        self.rows: dict[str, dict[str, Any]] = {}
        self.previous: dict[str, dict[str, Any]] = {}
        path = self.out / TABLE_JSON
        if path.is_file():
            table = read_json(path, "Move it away to start the batch afresh.")
            try:
                self.previous = {r["id"]: r for r in table["studies"]}
            except (KeyError, TypeError) as exc:
                raise InputError(f"{path} is not a cohort table ({exc}); move it away to start the "
                                 "batch afresh.") from None

    def up_to_date(self, study: Study, model_hash: str, members: int, rotations: int) -> dict[str, Any] | None:
        """The earlier row of ``study`` when it can be kept: same input bytes, model, members,
        test-time views and RV insertion point, and either refused (the same input is refused
        again) or ok with its output folder complete. Failed rows are always redone."""
        row = self.previous.get(study.id)
        if row is None or not (is_ok(row) or str(row.get("status", "")).startswith("refused")):
            return None
        row = {"rotations": 1, **row}  # rows from before the column: 1 view
        want = {"model_sha256": model_hash, "members": members, "rotations": rotations,
                "rv_insertion": study.rv_text(), "source": str(study.path)}
        if any(row.get(k) != v for k, v in want.items()):
            return None
        if is_ok(row) and not output_complete(self.out / study.id):
            return None
        if not study.path.exists() or row.get("input_sha256") != input_sha256(study.path):
            return None
        return row

    def add(self, row: dict[str, Any]) -> None:
        """Record a row and rewrite both files atomically."""
        self.rows[row["id"]] = row
        self.write()

    def ordered(self) -> list[dict[str, Any]]:
        return sorted(self.rows.values(), key=lambda r: self.order.get(r["id"], len(self.order)))

    def write(self) -> None:
        """Rewrite both files, the JSON (what a rerun keeps rows from) first: a CSV row is never
        one that the next run would redo."""
        self.out.mkdir(parents=True, exist_ok=True)
        rows = self.ordered()
        write_json_atomic(self.out / TABLE_JSON, {"settings": self.settings, "columns": list(COLUMNS),
                                                  "studies": rows})
        with atomic_path(self.out / TABLE_CSV) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
