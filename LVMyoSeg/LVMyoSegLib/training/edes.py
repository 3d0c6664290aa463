"""Labelled ED/ES frames of many patients (Sunnybrook's 36 hearts): read, check, map to network space.

The folder layout is that of ``shared/data/sunnybrook-edes`` (its README): a
``frames.csv`` with one row per frame (``cap_id`` = the patient id, the same id
as the whole cines' case ids, ``pathology``, ``slice``, ``phase``, ``frame`` ED/ES,
``epicardium`` 0/1, ``file``) and 8-bit PNGs in ``images/``, ``endocardium/`` and
``epicardium/`` (0/1 masks). These are 2D frames with sparse labels:

- ED: myocardium = epicardium AND NOT endocardium, blood pool = endocardium; both known;
- ES: blood pool known, myocardium unknown.

Every frame is checked on import (:func:`read_edes`): image and masks 2D, of one
size, masks 0/1 and not empty, the endocardium inside the epicardium (at most
:data:`MAX_ENDO_OUTSIDE` of its pixels outside, from rasterisation). A bad frame
stops the import with a message naming its file. A patient whose masks, though
well formed, do not sit on its images is set apart by :func:`usable_patients`:
in bright-blood cine the blood pool is brighter than the myocardium, so an ED
pool-to-myocardium intensity ratio near 1 means misregistered masks (one of
the 36, SCD0004001, has a median ratio of 1.02 against 1.75–4.0 for the others).
It is a plausibility check: masks moved onto other bright tissue pass it.

Network space (:func:`patient_frames`): the frames have no geometry, so the
nominal :data:`NOMINAL_SPACING_MM` is used; each slice's crop box is centred on a
straight line fitted through the patient's per-slice cavity centres against the
slice index (the way :func:`LVMyoSegLib.preprocessing.localisation.localise` centres a cine's
boxes on a fitted LV axis), and each slice's frames are normalised together, as
a cine's cycle is. Scale augmentation (±15%) covers the unknown true spacing.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, LabelError
from ..labels import BLOOD_POOL, MYOCARDIUM
from ..preprocessing import preprocess

NOMINAL_SPACING_MM = 1.367
MAX_ENDO_OUTSIDE = 0.02
MIN_POOL_TO_MYOCARDIUM = 1.3  # median ED ratio of median intensities; bright-blood cine is well above
GROUP_CODES = {"Heart failure with infarct": "HF-I", "Heart failure without infarct": "HF-NI",
               "Hypertrophy": "HYP", "Normal": "N"}
_COLUMNS = ("cap_id", "pathology", "slice", "phase", "frame", "epicardium", "file")


@dataclass(frozen=True)
class LabelledFrame:
    """One expert-labelled 2D frame: image ``[Y, X]`` float32, label map ``[Y, X]`` uint8 (0/1/2),
    ``known`` (myocardium, blood pool)."""

    patient: str
    slice: int
    phase: int
    kind: str  # "ED" or "ES"
    image: np.ndarray
    label_map: np.ndarray
    known: tuple[bool, bool]
    file: str


@dataclass(frozen=True)
class Patient:
    """A patient's labelled frames and pathology group code (:data:`GROUP_CODES`)."""

    patient_id: str
    group: str
    frames: tuple[LabelledFrame, ...]

    @property
    def slices(self) -> list[int]:
        return sorted({f.slice for f in self.frames})


@dataclass(frozen=True)
class NetworkFrames:
    """Frames in network space as one-frame sequences: ``x [F, 1, H, W, 1]``, ``y [F, 1, H, W, 2]``,
    ``known [F, 1, 2]``, the patient of each frame ``patients [F]``, and the crop transform
    and slice index of each frame (to map predictions back)."""

    x: np.ndarray
    y: np.ndarray
    known: np.ndarray
    patients: np.ndarray
    frames: tuple[LabelledFrame, ...]
    transforms: tuple[preprocess.CropTransform, ...]
    z: np.ndarray


def _read_png(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    if not path.is_file():
        raise InputError(f"{path} is missing; frames.csv lists it. Restore the file or remove its row.")
    try:
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError as exc:
        raise InputError(f"{path} cannot be read as an image ({str(exc).strip().splitlines()[-1]}); "
                         "the file is damaged: restore it.") from None
    if array.ndim != 2:
        raise InputError(f"{path} has shape {array.shape}; a 2D single-channel frame was expected.")
    return array


def _mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    m = _read_png(path)
    if m.shape != shape:
        raise LabelError(f"{path} is {m.shape[1]}x{m.shape[0]} pixels but its image is "
                         f"{shape[1]}x{shape[0]}; a mask must lie on its image's grid.")
    values = set(np.unique(m).tolist())
    if not values <= {0, 1}:
        raise LabelError(f"{path} holds values {sorted(values)[:6]}; a mask holds only 0 and 1.")
    if not m.any():
        raise LabelError(f"{path} is empty; a contoured frame's mask must hold its structure.")
    return m.astype(bool)


def _frame(root: Path, row: dict[str, str], line: int) -> LabelledFrame:
    where = f"{root / 'frames.csv'} line {line}"
    try:
        slice_, phase, epi = int(row["slice"]), int(row["phase"]), int(row["epicardium"])
    except ValueError:
        raise InputError(f"{where}: slice, phase and epicardium must be integers.") from None
    kind = row["frame"].strip().upper()
    if kind not in ("ED", "ES"):
        raise InputError(f"{where}: frame is {row['frame']!r}; it must be ED or ES.")
    if kind == "ES" and epi:
        raise LabelError(f"{where}: an ES frame with an epicardial mask; Sunnybrook draws the "
                         "epicardium at ED only. Check the row.")
    image = _read_png(root / "images" / row["file"])
    endo = _mask(root / "endocardium" / row["file"], image.shape)
    label_map = np.zeros(image.shape, np.uint8)
    if epi:
        epicardium = _mask(root / "epicardium" / row["file"], image.shape)
        outside = float((endo & ~epicardium).sum()) / float(endo.sum())
        if outside > MAX_ENDO_OUTSIDE:
            raise LabelError(f"{root / 'endocardium' / row['file']}: {outside:.1%} of the endocardium "
                             f"lies outside the epicardium (at most {MAX_ENDO_OUTSIDE:.0%} allowed); "
                             "the two masks do not belong together.")
        if not (epicardium & ~endo).any():
            raise LabelError(f"{root / 'epicardium' / row['file']}: no myocardium is left between the "
                             "epicardium and the endocardium.")
        label_map[epicardium] = MYOCARDIUM
    label_map[endo] = BLOOD_POOL
    return LabelledFrame(row["cap_id"], slice_, phase, kind, image.astype(np.float32), label_map,
                         (bool(epi), True), row["file"])


def read_edes(root: Path, patients: Iterable[str] | None = None) -> list[Patient]:
    """Read and check the frames under ``root`` (all patients, or those in ``patients``)."""
    root = Path(root)
    table = root / "frames.csv"
    if not table.is_file():
        raise InputError(f"{root} has no frames.csv: it is not a folder of labelled ED/ES frames "
                         "(see shared/data/sunnybrook-edes/README.md for the layout).")
    with table.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in _COLUMNS if rows and c not in rows[0]]
    if not rows or missing:
        raise InputError(f"{table} has no rows or lacks the columns {', '.join(missing)}.")
    wanted = None if patients is None else set(patients)
    by_patient: dict[str, list[LabelledFrame]] = {}
    groups: dict[str, str] = {}
    seen: dict[tuple[str, int, str], int] = {}
    for line, row in enumerate(rows, start=2):
        pid = row["cap_id"].strip()
        if wanted is not None and pid not in wanted:
            continue
        group = GROUP_CODES.get(row["pathology"].strip())
        if group is None:
            raise InputError(f"{table} line {line}: unknown pathology {row['pathology']!r} "
                             f"(known: {', '.join(GROUP_CODES)}).")
        if groups.setdefault(pid, group) != group:
            raise InputError(f"{table} line {line}: patient {pid} is listed under two pathologies.")
        frame = _frame(root, row, line)
        key = (pid, frame.slice, frame.kind)
        if key in seen:
            raise InputError(f"{table} lines {seen[key]} and {line}: two {frame.kind} frames of slice "
                             f"{frame.slice} of {pid}; remove the duplicate row.")
        seen[key] = line
        by_patient.setdefault(pid, []).append(frame)
    if wanted is not None and wanted - set(by_patient):
        raise InputError(f"{table} has no frames of {', '.join(sorted(wanted - set(by_patient)))}.")
    shapes = {f.image.shape for frames in by_patient.values() for f in frames}
    if len(shapes) > 1:
        raise InputError(f"{root}: frames of different sizes {sorted(shapes)}; one size is expected.")
    return [Patient(pid, groups[pid], tuple(sorted(fr, key=lambda f: (f.slice, f.kind))))
            for pid, fr in sorted(by_patient.items())]


def alignment_problem(patient: Patient) -> str | None:
    """Why ``patient``'s masks do not sit on its images, or None when they do (module doc)."""
    ratios = [float(np.median(f.image[f.label_map == BLOOD_POOL]) /
                    max(float(np.median(f.image[f.label_map == MYOCARDIUM])), 1e-3))
              for f in patient.frames if f.known[0]]
    if not ratios:
        return None
    ratio = float(np.median(ratios))
    if ratio >= MIN_POOL_TO_MYOCARDIUM:
        return None
    return (f"its masks do not sit on its images: inside them the blood pool is not brighter than the "
            f"myocardium (median ED intensity ratio {ratio:.2f}; bright-blood cine gives at least "
            f"{MIN_POOL_TO_MYOCARDIUM}). Redraw or re-register its masks.")


def usable_patients(patients: Iterable[Patient]) -> tuple[dict[str, Patient], dict[str, str]]:
    """``(usable patients by id, {excluded patient id: reason})``: :func:`alignment_problem` sorts them."""
    usable, excluded = {}, {}
    for p in patients:
        problem = alignment_problem(p)
        if problem is None:
            usable[p.patient_id] = p
        else:
            excluded[p.patient_id] = problem
    return usable, excluded


def _slice_centres(patient: Patient) -> dict[int, np.ndarray]:
    """Crop centre (row, column) of each slice: a weighted line fit of cavity centroids vs slice."""
    slices = patient.slices
    cavities = [np.argwhere(f.label_map == BLOOD_POOL) for f in patient.frames]
    zs = np.array([f.slice for f in patient.frames], float)
    pts = np.array([rc.mean(axis=0) for rc in cavities])
    wts = np.sqrt([len(rc) for rc in cavities])
    if len(set(zs.tolist())) < 2:
        centre = (pts * wts[:, None]).sum(0) / wts.sum()
        return {s: centre for s in slices}
    coef = [np.polyfit(zs, pts[:, k], 1, w=wts) for k in range(2)]
    return {s: np.array([np.polyval(coef[0], s), np.polyval(coef[1], s)]) for s in slices}


def patient_frames(patient: Patient, pixel_mm: float, crop_size: int) -> NetworkFrames:
    """One patient's frames in network space (module doc)."""
    slices = patient.slices
    shape = patient.frames[0].image.shape
    centres = _slice_centres(patient)
    transform = preprocess.crop_transform((len(slices), *shape), (NOMINAL_SPACING_MM,) * 2,
                                          np.array([centres[s] for s in slices]), pixel_mm, crop_size)
    xs, ys, zs, order = [], [], [], []
    for z, s in enumerate(slices):
        frames = [f for f in patient.frames if f.slice == s]
        xs.extend(preprocess.slice_to_network(np.stack([f.image for f in frames]), transform, z))
        ys.extend(np.stack([preprocess.mask_to_network((f.label_map == v)[None], transform, z)[0]
                            for v in (MYOCARDIUM, BLOOD_POOL)], axis=-1) for f in frames)
        zs.extend([z] * len(frames))
        order.extend(frames)
    ks = [f.known for f in order]
    n = len(order)
    return NetworkFrames(np.stack(xs)[:, None, ..., None], np.stack(ys)[:, None].astype(np.float32),
                         np.asarray(ks, bool).reshape(n, 1, 2), np.array([patient.patient_id] * n),
                         tuple(order), (transform,) * n, np.asarray(zs))


def concat_frames(parts: Sequence[NetworkFrames]) -> NetworkFrames:
    """Several patients' :class:`NetworkFrames` as one."""
    if not parts:
        raise InputError("No labelled frames to train on.")
    return NetworkFrames(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]),
                         np.concatenate([p.known for p in parts]), np.concatenate([p.patients for p in parts]),
                         tuple(f for p in parts for f in p.frames),
                         tuple(t for p in parts for t in p.transforms), np.concatenate([p.z for p in parts]))


def to_frame_grid(probs: np.ndarray, frames: NetworkFrames) -> np.ndarray:
    """Network-space probabilities ``[F, 1, H, W, C]`` back onto each frame's own grid ``[F, Y, X, C]``."""
    out = []
    for k in range(len(frames.frames)):
        transform, z = frames.transforms[k], int(frames.z[k])
        one_slice = dataclasses.replace(transform, input_shape_zyx=(1, *transform.input_shape_zyx[1:]),
                                        origin_ji=transform.origin_ji[z:z + 1])
        out.append(preprocess.to_input(probs[k][None], one_slice)[0, 0])
    return np.stack(out)
