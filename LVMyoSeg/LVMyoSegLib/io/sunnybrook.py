"""Sunnybrook Cardiac Data: the study listing, expert contours and their label maps.

Layout (see the data's README): ``link.csv`` maps ``dicom/<patient>/`` to
``contours/<contour_id>/{i,o}-contours/IM-0001-NNNN-{i,o}contour-manual.txt``;
contour file ``IM-0001-NNNN`` belongs to ``dicom/<patient>/<int(NNNN)>.dcm``.
Which frame (phase t, slice z) that file holds is looked up in
:attr:`DicomCine.files`, never computed from the number.

Coordinate convention: in the files a point ``(x, y)`` is (column, row) in
1-based pixel-centre coordinates (MATLAB's, as the challenge's tools used): the
centre of 0-based pixel ``(row j, column i)`` is at ``(x, y) = (i + 1, j + 1)``.
Measured on all five studies: the image-gradient maximum along the 96
endocardial contours is at a median shift of (-1.0, -0.94) px (x, y) from the
raw file values; 47 epicardial contours: (-1.4, -0.6). :func:`read_contour_file`
returns the raw values; :func:`study_contours` subtracts :data:`CONTOUR_ORIGIN`,
so its points are 0-based pixel coordinates (pixel centres at integers, as in
DICOM, where ImagePositionPatient is the centre of the first pixel). Masks hold
the pixels whose centres lie inside the polygon (:func:`skimage.draw.polygon`).
``Testing/test_sunnybrook.py`` re-checks the convention on real images.

Labels: cavity (blood pool) = inside the endocardial (i) contour; myocardium =
inside the epicardial (o) contour minus the cavity. ``known[t, z, myocardium]``
only where both contours exist (end-diastole); ``known[t, z, blood_pool]`` where
an i-contour exists (end-diastole and end-systole).
"""

from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from skimage.draw import polygon

from ..errors import InputError, LabelError
from ..labels import BLOOD_POOL, CHANNELS, MYOCARDIUM, Labels
from .dicom_reader import DicomCine, read_dicom_cine

ENV_ROOT = "LVMYOSEG_SUNNYBROOK"
CONTOUR_ORIGIN = 1.0  # file coordinates are 1-based: subtract to get 0-based pixel coordinates
_CONTOUR_NAME = re.compile(r"^IM-(\d+)-(\d+)-([io])contour-manual\.txt$")

Contours = dict[tuple[int, int], dict[str, np.ndarray]]


@dataclass(frozen=True)
class SunnybrookStudy:
    """One study of the dataset: its DICOM folder and its contour folder."""

    patient_id: str
    contour_id: str
    dicom_dir: Path
    contour_dir: Path


def default_root() -> Path:
    """Dataset root: ``$LVMYOSEG_SUNNYBROOK`` or ``shared/data/sunnybrook`` beside the repository."""
    env = os.environ.get(ENV_ROOT)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[4] / "shared" / "data" / "sunnybrook"


def list_studies(root: Path | str | None = None) -> list[SunnybrookStudy]:
    """Studies listed in ``root/link.csv`` (columns ``patient_id,original_id``)."""
    root = Path(root) if root is not None else default_root()
    link = root / "link.csv"
    if not link.is_file():
        raise InputError(f"{link} does not exist; point {ENV_ROOT} (or the root argument) at the "
                         "Sunnybrook folder that holds link.csv, dicom/ and contours/.")
    studies = []
    with link.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"patient_id", "original_id"} <= set(reader.fieldnames):
            raise InputError(f"{link} needs the columns patient_id,original_id; it has "
                             f"{reader.fieldnames}.")
        for row in reader:
            pid, cid = row["patient_id"].strip(), row["original_id"].strip()
            study = SunnybrookStudy(pid, cid, root / "dicom" / pid, root / "contours" / cid)
            for folder in (study.dicom_dir, study.contour_dir):
                if not folder.is_dir():
                    raise InputError(f"{link} lists {pid}/{cid} but {folder} is missing; restore the "
                                     "dataset folder or remove the line.")
            studies.append(study)
    if not studies:
        raise InputError(f"{link} lists no study.")
    return studies


def read_contour_file(path: Path | str) -> np.ndarray:
    """Points ``[N, 2]`` (x = column, y = row) of one contour file; blank lines are skipped."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"Cannot read contour file {path}: {exc}.") from None
    points = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            values = [float(v) for v in fields]
        except ValueError:
            values = []
        if len(fields) != 2 or len(values) != 2 or not all(math.isfinite(v) for v in values):
            raise LabelError(f"{path}, line {number}: expected two finite numbers 'x y', got "
                             f"{line.strip()[:60]!r}. Fix or remove that line.")
        points.append(values)
    if len(points) < 3:
        raise LabelError(f"{path} holds {len(points)} point(s); a contour needs at least 3. "
                         "Redraw the contour or remove the file.")
    return np.asarray(points, dtype=np.float64)


def contour_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of the pixels whose centres lie inside the closed contour ``points``."""
    mask = np.zeros(shape, dtype=bool)
    rr, cc = polygon(points[:, 1], points[:, 0], shape)
    mask[rr, cc] = True
    return mask


def study_contours(study: SunnybrookStudy, dicom: DicomCine | None = None) -> Contours:
    """Expert contours by frame: ``{(t, z): {"i": [N,2], "o": [M,2]}}`` (keys present if drawn).

    Points are ``(x, y)`` = (column, row) in 0-based pixel coordinates of the cine's frames.
    """
    dicom = dicom if dicom is not None else read_dicom_cine(study.dicom_dir)
    where = {p.resolve(): (t, z) for t, row in enumerate(dicom.files) for z, p in enumerate(row)}
    contours: Contours = {}
    for kind in ("i", "o"):
        folder = study.contour_dir / f"{kind}-contours"
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            match = _CONTOUR_NAME.match(path.name)
            if match is None:
                continue
            dcm = (study.dicom_dir / f"{int(match.group(2))}.dcm").resolve()
            if dcm not in where:
                raise LabelError(f"Contour {path} belongs to {dcm}, which is not a frame of the cine "
                                 f"in {study.dicom_dir}; check link.csv and the DICOM folder.")
            contours.setdefault(where[dcm], {})[kind] = read_contour_file(path) - CONTOUR_ORIGIN
    if not contours:
        raise LabelError(f"{study.contour_dir} holds no contour file named "
                         "IM-0001-NNNN-{i,o}contour-manual.txt.")
    return contours


def contours_to_labels(contours: Contours, shape_tzyx: tuple[int, int, int, int],
                       source: str = "") -> Labels:
    """Rasterise contours onto a ``[T, Z, Y, X]`` grid (see the module doc for the rules)."""
    lm = np.zeros(shape_tzyx, dtype=np.uint8)
    known = np.zeros(tuple(shape_tzyx[:2]) + (len(CHANNELS),), dtype=bool)
    plane = tuple(shape_tzyx[2:])
    for (t, z), drawn in contours.items():
        if "i" not in drawn:  # epicardium alone: the cavity, hence the myocardium, is unknown
            continue
        if "o" in drawn:
            lm[t, z][contour_mask(drawn["o"], plane)] = MYOCARDIUM
            known[t, z, CHANNELS.index("myocardium")] = True
        lm[t, z][contour_mask(drawn["i"], plane)] = BLOOD_POOL
        known[t, z, CHANNELS.index("blood_pool")] = True
    return Labels(lm, known, source)


def cardiac_phases(labels: Labels) -> tuple[int, int]:
    """(ED, ES) 0-based phases: ED has myocardium labels, ES only blood-pool labels."""
    myo = labels.known[:, :, CHANNELS.index("myocardium")].any(axis=1)
    pool = labels.known[:, :, CHANNELS.index("blood_pool")].any(axis=1)
    ed = np.flatnonzero(myo)
    es = np.flatnonzero(pool & ~myo)
    if len(ed) != 1 or len(es) != 1:
        raise LabelError(f"Labels ({labels.source}) do not mark exactly one end-diastolic phase (with "
                         f"myocardium: {ed.tolist()}) and one end-systolic phase (cavity only: "
                         f"{es.tolist()}).")
    return int(ed[0]), int(es[0])


def load_study(study: SunnybrookStudy) -> tuple[DicomCine, Labels]:
    """Read a study's cine and rasterise its expert contours onto the cine's grid."""
    dicom = read_dicom_cine(study.dicom_dir)
    contours = study_contours(study, dicom)
    labels = contours_to_labels(contours, dicom.cine.frames.shape,
                                source=f"{study.contour_dir} ({study.patient_id})")
    return dicom, labels


def sunnybrook_to_dataset(root: Path | str | None, dataset_dir: Path) -> list[Path]:
    """Add every Sunnybrook study under ``root`` to the LVMyoSeg dataset ``dataset_dir``
    (case id = DICOM patient id); returns the new case folders. Studies already in the dataset
    are kept as they are and skipped, so an interrupted conversion is completed by running it again."""
    from .dataset import DATASET_MANIFEST, add_case, list_cases

    present = set(list_cases(dataset_dir)) if (Path(dataset_dir) / DATASET_MANIFEST).is_file() else set()
    added = []
    for study in list_studies(root):
        if study.patient_id in present:
            continue
        dicom, labels = load_study(study)
        added.append(add_case(dataset_dir, study.patient_id, dicom.cine, labels,
                              source=f"Sunnybrook Cardiac Data {study.patient_id} ({study.contour_id}), CC0",
                              notes="Expert contours: myocardium at ED, cavity at ED and ES "
                                    "(Radau et al. 2009).", complete_stacks=True))
    return added
