"""``read_cine(path)``: picks the reader by what the path is.

- a list/tuple of files: one 3D volume per phase (:func:`volume_files.read_frames`);
- a folder holding volume files (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd): those files,
  one 3D file per phase, in natural name order (frame2 before frame10); a lone file in
  the folder is read as a 4D cine;
- any other folder: a DICOM cine series (:mod:`dicom_reader`; ``series_uid`` picks one
  when it holds several);
- a volume file: a 4D cine (:func:`volume_files.read_4d`); a 3D one is refused (T=1).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from ..cine import Cine
from ..errors import InputError
from .volume_files import VOLUME_SUFFIXES, read_4d, read_frames, volume_suffix

DICOM_SUFFIXES = (".dcm", ".ima", ".dicom")


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _check_frame_numbering(folder: Path, files: list[Path]) -> None:
    """Refuse numbered frame files (frame_01, frame_02, ...) with a number missing or repeated."""
    numbers = []
    for path in files:
        digits = re.findall(r"\d+", path.name.split(".")[0])
        if not digits:
            return  # not numbered: the natural name order is all there is
        numbers.append(int(digits[-1]))
    repeated = sorted({n for n in numbers if numbers.count(n) > 1})
    if repeated:
        names = [p.name for p, n in zip(files, numbers) if n == repeated[0]]
        raise InputError(f"Frame files in {folder} repeat number {repeated[0]} ({', '.join(names)}); each phase "
                         "needs one file. Remove the extra copy.")
    missing = sorted(set(range(min(numbers), max(numbers) + 1)) - set(numbers))
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        raise InputError(f"Frame files in {folder} are numbered {min(numbers)}-{max(numbers)} but number(s) "
                         f"{shown} are missing, so phases would be skipped. Restore the missing frame files.")


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _read_folder(folder: Path, series_uid: str | None) -> Cine:
    files = sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")),
                   key=_natural_key)
    if not files and not any(p.is_dir() for p in folder.iterdir()):
        raise InputError(f"{folder} is empty. Pick the folder that holds the cine's DICOM files "
                         "or its 3D frame files.")
    volumes = [p for p in files if volume_suffix(p)]
    if volumes:
        dicoms = [p for p in files if p.suffix.lower() in DICOM_SUFFIXES]
        if dicoms:
            raise InputError(f"{folder} holds both volume files ({volumes[0].name}, ...) and DICOM files "
                             f"({dicoms[0].name}, ...); put the cine in a folder of its own.")
        if series_uid is not None:
            raise InputError(f"A series UID was given but {folder} holds volume files, not DICOM.")
        if len(volumes) == 1:
            return read_4d(volumes[0])
        _check_frame_numbering(folder, volumes)
        return read_frames(volumes)
    from .dicom_reader import read_dicom_cine  # lazy: pydicom only when reading DICOM

    return read_dicom_cine(folder, series_uid).cine


def read_cine(path: Path | str | Sequence[Path | str], series_uid: str | None = None) -> Cine:
    """Read a cine from a DICOM folder, a 4D volume file, or a folder/list of 3D frame files."""
    if isinstance(path, (list, tuple)):
        return read_frames([Path(p) for p in path])
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist; check the path.")
    if path.is_dir():
        return _read_folder(path, series_uid)
    if volume_suffix(path):
        if series_uid is not None:
            raise InputError(f"A series UID was given but {path} is a volume file, not a DICOM folder.")
        return read_4d(path)
    if _is_dicom_file(path):
        raise InputError(f"{path} is a single DICOM file; pass the folder that holds the whole cine "
                         "series (all slices and phases).")
    raise InputError(f"{path} has an unknown file type ('{''.join(path.suffixes) or 'no extension'}'). "
                     f"LVMyoSeg reads DICOM folders and {', '.join(VOLUME_SUFFIXES)} volumes.")
