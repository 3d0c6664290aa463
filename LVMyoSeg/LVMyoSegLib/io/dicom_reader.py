"""DICOM folder -> :class:`Cine` for multi-slice, multi-phase short-axis cine series.

Frames are ordered from the headers, never from file names: slices by their
position along the slice normal (ImagePositionPatient · normal, the normal being
the cross product of the two ImageOrientationPatient axes), phases by
TriggerTime. The slice step comes from those positions; SliceThickness and
SliceLocation are ignored (SliceLocation differences on the Sunnybrook studies,
5.3-6.7 mm, are not the distance between the planes, which is 8 or 10 mm). UID values that break the DICOM UI syntax are used as plain strings.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from ..cine import Cine, Geometry
from ..errors import GeometryError, InputError

SLICE_POSITION_TOLERANCE_MM = 0.05
SLICE_STEP_TOLERANCE = 0.1  # relative deviation of any step from the mean step
MR_IMAGE_SOP_PREFIX = "1.2.840.10008.5.1.4.1.1.4"  # MR image storage SOP classes


@dataclass(frozen=True)
class DicomCine:
    """A cine read from DICOM, with the file that holds each frame (``files[t][z]``)."""

    cine: Cine
    files: list[list[Path]]
    series_uid: str


@dataclass(frozen=True)
class _Header:
    path: Path
    series_uid: str
    description: str
    row_dir: np.ndarray
    col_dir: np.ndarray
    position: np.ndarray
    spacing_rc: tuple[float, float]
    trigger_ms: float
    instance: int
    shape: tuple[int, int]


def _read_header(path: Path) -> _Header | None:
    """Header of one file, or None when the file is not a DICOM image (e.g. DICOMDIR)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=path.suffix.lower() == ".dcm")
    except InvalidDicomError:
        if path.suffix.lower() in (".dcm", ".ima"):
            raise InputError(f"{path} is not a readable DICOM file (damaged or not DICOM); "
                             "remove it from the folder or replace it with a good copy.") from None
        return None
    except Exception as exc:  # truncated headers raise a variety of errors in pydicom
        raise InputError(f"Cannot read the DICOM header of {path}: {exc}. The file is damaged or "
                         "truncated; replace it with a good copy or remove it.") from None
    if "PixelData" not in ds and not hasattr(ds, "Rows"):
        sop = str(ds.get("SOPClassUID", "") or getattr(ds.get("file_meta"), "MediaStorageSOPClassUID", ""))
        if path.suffix.lower() in (".dcm", ".ima") and (not sop or sop.startswith(MR_IMAGE_SOP_PREFIX)):
            raise InputError(f"{path} is not a complete DICOM image (truncated, damaged or not DICOM); "
                             "replace it with a good copy or remove it from the folder.")
        return None
    missing = [k for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows",
                           "Columns") if k not in ds]
    if missing:
        raise InputError(f"{path} lacks {', '.join(missing)}; LVMyoSeg needs them to place the "
                         "frame in space. Export the series with full image-plane attributes.")
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    return _Header(
        path=path,
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        description=str(ds.get("SeriesDescription", "")),
        row_dir=iop[:3] / np.linalg.norm(iop[:3]),
        col_dir=iop[3:] / np.linalg.norm(iop[3:]),
        position=np.array([float(v) for v in ds.ImagePositionPatient]),
        spacing_rc=(float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])),
        trigger_ms=float(ds.get("TriggerTime", np.nan) or np.nan),
        instance=int(ds.get("InstanceNumber", 0) or 0),
        shape=(int(ds.Rows), int(ds.Columns)),
    )


def _pixels(path: Path) -> np.ndarray:
    try:
        ds = pydicom.dcmread(path, force=True)
        arr = ds.pixel_array.astype(np.float32)
    except Exception as exc:
        raise InputError(f"Cannot decode the pixel data of {path}: {exc}. The file is truncated or "
                         "uses an unsupported compression; replace it with a good copy.") from None
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return arr * slope + intercept


def list_series(folder: Path) -> dict[str, list[_Header]]:
    """Image headers of every DICOM file under ``folder``, grouped by SeriesInstanceUID."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; pass the folder that holds the cine's DICOM files.")
    series: dict[str, list[_Header]] = defaultdict(list)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        header = _read_header(path)
        if header is not None:
            series[header.series_uid].append(header)
    if not series:
        raise InputError(f"{folder} holds no DICOM image files. Pick the folder of the cine series.")
    return dict(series)


def read_dicom_cine(folder: Path, series_uid: str | None = None) -> DicomCine:
    """Read the cine series in ``folder`` (or the one with ``series_uid`` when it holds several)."""
    folder = Path(folder)
    series = list_series(folder)
    if series_uid is None:
        if len(series) > 1:
            listing = "; ".join(f"{uid} ({h[0].description or 'no description'}, {len(h)} files)"
                                for uid, h in series.items())
            raise InputError(f"{folder} holds {len(series)} series: {listing}. "
                             "Pick one with --series UID.")
        series_uid = next(iter(series))
    if series_uid not in series:
        raise InputError(f"Series {series_uid} is not in {folder}; it holds {', '.join(series)}.")
    return _assemble(series[series_uid], folder, series_uid)


def _assemble(headers: list[_Header], folder: Path, series_uid: str) -> DicomCine:
    first = headers[0]
    for h in headers:
        if h.shape != first.shape or not np.allclose(h.spacing_rc, first.spacing_rc, atol=1e-4):
            raise GeometryError(f"{h.path} is {h.shape[1]}x{h.shape[0]} pixels of {h.spacing_rc} mm but "
                                f"{first.path} is {first.shape[1]}x{first.shape[0]} of {first.spacing_rc} mm; "
                                "a cine series needs one matrix size and pixel spacing.")
        if not (np.allclose(h.row_dir, first.row_dir, atol=1e-3)
                and np.allclose(h.col_dir, first.col_dir, atol=1e-3)):
            raise GeometryError(f"{h.path} has another orientation than {first.path}; the series mixes "
                                "image planes. Select the short-axis cine series only.")
    normal = np.cross(first.row_dir, first.col_dir)
    distances = np.array([float(h.position @ normal) for h in headers])
    order = np.argsort(distances, kind="stable")
    slices: list[list[_Header]] = []
    slice_pos: list[float] = []
    for idx in order:
        if slice_pos and abs(distances[idx] - slice_pos[-1]) <= SLICE_POSITION_TOLERANCE_MM:
            slices[-1].append(headers[idx])
        else:
            slices.append([headers[idx]])
            slice_pos.append(float(distances[idx]))
    for s in slices:
        seen: dict[tuple, _Header] = {}
        for h in s:
            key = (h.trigger_ms if np.isfinite(h.trigger_ms) else None, h.instance)
            if key in seen:
                raise GeometryError(f"{h.path.name} duplicates {seen[key].path.name} in {folder} (same slice "
                                    f"position, trigger time {h.trigger_ms:g} ms and instance number "
                                    f"{h.instance}): the file was copied twice. Remove one of them.")
            seen[key] = h
    n_phases = {len(s) for s in slices}
    if len(n_phases) != 1:
        counts = ", ".join(f"{p:.1f} mm: {len(s)}" for p, s in zip(slice_pos, slices))
        raise GeometryError(f"Slices in {folder} have different numbers of phases ({counts}); "
                            "the series is incomplete. Re-export the whole cine series.")
    n_t = n_phases.pop()
    for s in slices:
        s.sort(key=lambda h: (np.nan_to_num(h.trigger_ms, nan=np.inf), h.instance))
    z_steps = np.diff(slice_pos)
    if len(z_steps):
        mean_step = float(z_steps.mean())
        if np.max(np.abs(z_steps - mean_step)) > SLICE_STEP_TOLERANCE * mean_step:
            raise GeometryError(f"Slice positions in {folder} are unevenly spaced (steps "
                                f"{np.round(z_steps, 2).tolist()} mm); LVMyoSeg needs a regular stack. "
                                "Remove slices from other acquisitions or resample the series.")
        in_plane = [np.linalg.norm((s[0].position - slices[0][0].position)
                                   - (p - slice_pos[0]) * normal) for s, p in zip(slices, slice_pos)]
        if max(in_plane) > 1.0:
            raise GeometryError(f"Slices in {folder} are shifted in-plane against each other by up to "
                                f"{max(in_plane):.1f} mm; they do not form one stack.")
    else:
        mean_step = 1.0
    files = [[slices[z][t].path for z in range(len(slices))] for t in range(n_t)]
    frames = np.stack([np.stack([_pixels(p) for p in row]) for row in files])
    times = np.array([[slices[z][t].trigger_ms for z in range(len(slices))] for t in range(n_t)])
    trigger = np.nanmean(times, axis=1) if np.isfinite(times).all() else np.arange(n_t, dtype=float)
    geometry = Geometry(
        spacing=(first.spacing_rc[1], first.spacing_rc[0], mean_step),
        origin=tuple(slices[0][0].position),
        direction=np.column_stack([first.row_dir, first.col_dir, normal]),
    )
    return DicomCine(Cine(frames, geometry, trigger, source=str(folder)), files, series_uid)
