"""4D NIfTI / NRRD files and lists of 3D frames <-> :class:`Cine`; label and probability writers.

Reading goes through SimpleITK. The time axis of a 4D file is the 4th image axis
(NIfTI, plain 4D NRRD, MetaImage) or the ``list`` axis of a 3D Slicer volume
sequence (``.seq.nrrd``: ``kinds: domain domain domain list``, or ``list`` first in
older files), which SimpleITK reads as the components of a 3D vector image.

Trigger times (ms), in order of preference:
1. our NRRD key ``LVMyoSeg_trigger_times_ms`` (space-separated);
2. Slicer's sequence index values, ``axis 3 index values`` (or ``axis 0``), scaled by the
   list axis unit when it says ``s``/``us``;
3. NIfTI time axis: toffset + n * pixdim[4] in the unit of xyzt_units (files we write carry
   "time in ms" in ``descrip``; ITK labels every time axis "seconds", so a step that is only
   plausible in ms, 2-500 ms, is taken as ms; an implausible step means no times);
4. else phase indices 0, 1, 2, ... .
:attr:`Volume4D.time_source` says which one was used.

Writing (:func:`write_4d`) picks the format by extension:
- ``.nrrd`` (also ``.seq.nrrd``): a Slicer volume-sequence NRRD written here (SimpleITK
  cannot write the ``list`` axis Slicer needs): LPS space, ``kinds: domain domain domain
  list``, gzip, exact trigger times in ``axis 3 index values`` and
  ``LVMyoSeg_trigger_times_ms``, ``DataNodeClassName`` (label maps load as label volumes).
- ``.nii`` / ``.nii.gz``: 4D NIfTI via SimpleITK; only evenly spaced times survive
  (toffset = first time, pixdim[4] = mean step in ms).
Multi-channel arrays ``[T, Z, Y, X, C]`` are written as one 4D file per channel,
``<name>_<channel><ext>`` (e.g. ``probabilities_myocardium.nii.gz``): every viewer
opens a 4D scalar file, few open 5D ones. Writes are atomic (:func:`LVMyoSegLib.files.atomic_path`).
"""

from __future__ import annotations

import gzip
import re
import zlib
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ..cine import Cine, Geometry
from ..errors import GeometryError, InputError
from ..files import atomic_path
from ..labels import CHANNELS, checked_label_map

TRIGGER_TIMES_KEY = "LVMyoSeg_trigger_times_ms"
KIND_KEY = "LVMyoSeg_kind"
NIFTI_TIME_MARK = "time in ms"
KINDS = ("image", "probabilities", "labels")
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".seq.nrrd", ".nrrd", ".nhdr", ".mha", ".mhd")
WRITE_SUFFIXES = (".nii.gz", ".nii", ".seq.nrrd", ".nrrd")
GEOMETRY_TOLERANCE_MM = 1e-3
PLAUSIBLE_PHASE_STEP_MS = (2.0, 500.0)  # a NIfTI time step outside this is taken as "no times"
_NIFTI_TIME_UNIT_TO_MS = {8: 1000.0, 16: 1.0, 24: 1e-3}  # xyzt_units & 0x38: s, ms, us


@dataclass(frozen=True)
class Volume4D:
    """A 4D image as stored: ``array [T, Z, Y, X]`` (file dtype), geometry, times and their origin."""

    array: np.ndarray
    geometry: Geometry
    trigger_times_ms: np.ndarray
    time_source: str
    path: Path


def volume_suffix(path: Path) -> str:
    """The volume-file suffix of ``path`` (".nii.gz", ".nrrd", ...), or "" when it has none."""
    name = Path(path).name.lower()
    return next((s for s in VOLUME_SUFFIXES if name.endswith(s)), "")


# ---------------------------------------------------------------- reading


def _check_nifti_payload(path: Path, reader: sitk.ImageFileReader) -> None:
    """Checks ITK's NIfTI reader skips: it zero-fills truncated files and turns NaN/Inf into 0."""
    n_values = int(np.prod([int(reader.GetMetaData(f"dim[{i}]"))
                            for i in range(1, int(reader.GetMetaData("dim[0]")) + 1)]))
    itemsize = int(reader.GetMetaData("bitpix")) // 8
    offset = int(float(reader.GetMetaData("vox_offset")))
    float_type = {16: "f4", 64: "f8"}.get(int(reader.GetMetaData("datatype")))
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    got, bad, rest = 0, 0, b""
    try:
        with opener(path, "rb") as f:
            head = f.read(offset)
            endian = "<" if int.from_bytes(head[:4], "little") in (348, 540) else ">"
            while got < n_values * itemsize and (chunk := f.read(min(1 << 22, n_values * itemsize - got))):
                got += len(chunk)
                if float_type:
                    data, cut = rest + chunk, (len(rest) + len(chunk)) // itemsize * itemsize
                    values = np.frombuffer(data[:cut], dtype=endian + float_type)
                    bad += int(np.count_nonzero(~np.isfinite(values)))
                    rest = data[cut:]
    except (EOFError, OSError, zlib.error) as exc:
        raise InputError(f"{path} is truncated or damaged ({exc}); replace it with a complete copy.") from None
    if got < n_values * itemsize:
        raise InputError(f"{path} is truncated: it holds {got} of the {n_values * itemsize} bytes of image "
                         "data its header announces. Replace it with a complete copy.")
    if bad:
        raise InputError(f"{path} has {bad} NaN/Inf voxels. Fix or re-export the images; LVMyoSeg does "
                         "not guess values for them.")


def read_image(path: Path) -> sitk.Image:
    """Read one image file with SimpleITK; :class:`InputError` naming the file when it cannot."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist or is not a file; check the path.")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        if "dim[0]" in reader.GetMetaDataKeys() and "vox_offset" in reader.GetMetaDataKeys():
            _check_nifti_payload(path, reader)
        return reader.Execute()
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()
        if any(("zero" in d.lower() or "singular" in d.lower() or "degenerate" in d.lower())
               and ("direction" in d.lower() or "vector" in d.lower()) for d in detail):
            raise InputError(f"Cannot read {path}: its header gives an axis a zero or degenerate direction "
                             "vector (NRRD 'space directions', NIfTI orientation), so its voxels have no "
                             "position. Fix the header or re-export the volume.") from None
        reason = "not an image file SimpleITK can read" if any("Unable to determine ImageIO" in d
                                                               for d in detail) \
            else "damaged or truncated (" + (detail[-1] if detail else "read error") + ")"
        raise InputError(f"Cannot read {path}: {reason}. Check that it is a complete NIfTI/NRRD/"
                         "MetaImage volume; re-export it if needed.") from None


def _spatial_geometry(img: sitk.Image, path: Path) -> Geometry:
    n = img.GetDimension()
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(n, n)
    if n == 4 and (np.abs(direction[:3, 3]).max() > 1e-6 or np.abs(direction[3, :3]).max() > 1e-6):
        raise GeometryError(f"{path} has a direction matrix that mixes time with space; the 4th axis "
                            "must be time alone. Re-export the cine as a 4D (3D + time) volume.")
    try:
        return Geometry(spacing=img.GetSpacing()[:3], origin=img.GetOrigin()[:3], direction=direction[:3, :3])
    except GeometryError as exc:
        raise GeometryError(f"{path}: {exc}") from None


def _meta(img: sitk.Image) -> dict[str, str]:
    return {k: img.GetMetaData(k) for k in img.GetMetaDataKeys()}


def _numbers(text: str) -> np.ndarray | None:
    try:
        values = np.array([float(v) for v in text.split()], dtype=np.float64)
    except ValueError:
        return None
    return values if values.size and np.all(np.isfinite(values)) else None


def _trigger_times(img: sitk.Image, n_t: int) -> tuple[np.ndarray, str]:
    meta = _meta(img)
    own = _numbers(meta.get(TRIGGER_TIMES_KEY, ""))
    if own is not None and own.size == n_t:
        return own, f"NRRD key {TRIGGER_TIMES_KEY}"
    for key in ("axis 3 index values", "axis 0 index values"):
        values = _numbers(meta.get(key, ""))
        if values is not None and values.size == n_t:
            unit = meta.get("NRRD_units[pixel]", "").strip().strip('"').lower()
            scale = {"s": 1000.0, "sec": 1000.0, "us": 1e-3}.get(unit, 1.0)
            return values * scale, f"Slicer sequence '{key}'" + (f" ({unit})" if unit else "")
    if img.GetDimension() == 4 and "pixdim[4]" in meta:
        step, offset = float(meta["pixdim[4]"]), float(meta.get("toffset", 0) or 0)
        code = 16 if NIFTI_TIME_MARK in meta.get("descrip", "") else int(meta.get("xyzt_units", 0) or 0) & 0x38
        unit = {8: "s", 16: "ms", 24: "us"}.get(code, "no unit")
        lo, hi = PLAUSIBLE_PHASE_STEP_MS
        for scale, how in ((_NIFTI_TIME_UNIT_TO_MS.get(code, 1.0), unit),
                           (1.0, f"ms; the header says {unit}, implausible for a cine")):
            if np.isfinite(step) and lo <= step * scale <= hi:
                return (offset + step * np.arange(n_t)) * scale, f"NIfTI time axis (pixdim[4], {how})"
    return np.arange(n_t, dtype=np.float64), "phase indices (the file has no trigger times)"


def read_volume_4d(path: Path) -> Volume4D:
    """Read a 4D volume (time = 4th axis, or the list axis of a Slicer ``.seq.nrrd``) as stored."""
    path = Path(path)
    img = read_image(path)
    dim, comps = img.GetDimension(), img.GetNumberOfComponentsPerPixel()
    if dim == 2:
        raise InputError(f"{path} is a 2D image ({img.GetSize()[0]}x{img.GetSize()[1]}); LVMyoSeg needs "
                         "a cine: a 4D (3D + time) volume or a DICOM cine series.")
    if dim > 4:
        raise InputError(f"{path} has {dim} dimensions; LVMyoSeg reads 4D (3D + time) volumes. Save one "
                         "4D file per channel.")
    if comps > 1:
        meta = _meta(img)
        is_sequence = meta.get("NRRD_kinds[pixel]", "") == "list" or any(
            re.fullmatch(r"axis \d index values", k) for k in meta)
        if dim != 3 or not is_sequence:
            raise InputError(f"{path} is a multi-component ({comps} values per voxel) image, not a cine. "
                             "Save the cine as a 4D scalar volume or a Slicer volume sequence (.seq.nrrd).")
        array = np.moveaxis(sitk.GetArrayFromImage(img), -1, 0)
    elif dim == 3:
        raise InputError(f"{path} is a single 3D volume (T=1): it is not a cine. Load the 4D cine "
                         "(3D + time), its DICOM series, or one 3D file per phase.")
    else:
        array = sitk.GetArrayFromImage(img)
    geometry = _spatial_geometry(img, path)
    times, how = _trigger_times(img, array.shape[0])
    return Volume4D(array, geometry, times, how, path)


def read_4d(path: Path) -> Cine:
    """A :class:`Cine` from a 4D NIfTI / NRRD / MetaImage file (see module notes for the times)."""
    volume = read_volume_4d(path)
    return Cine(volume.array, volume.geometry, volume.trigger_times_ms, source=str(volume.path))


def read_frames(paths: Sequence[Path]) -> Cine:
    """A :class:`Cine` from one 3D file per phase, in the given order; times are phase indices.

    Every frame must have the size and geometry of the first one, else :class:`GeometryError`
    naming the first file that differs.
    """
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise InputError(f"{len(paths)} frame file(s) given ({', '.join(map(str, paths)) or 'none'}): "
                         "a single 3D volume (T=1) is not a cine. Pass one 3D file per phase.")
    frames: list[np.ndarray] = []
    first_geometry: Geometry | None = None
    for path in paths:
        img = read_image(path)
        if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(f"{path} is a {img.GetDimension()}D image with {img.GetNumberOfComponentsPerPixel()} "
                             "value(s) per voxel; each phase must be one 3D scalar volume.")
        geometry = _spatial_geometry(img, path)
        array = sitk.GetArrayFromImage(img)
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise InputError(f"{path} has {int(np.count_nonzero(~np.isfinite(array)))} NaN/Inf voxels. Fix "
                             "or re-export the frame; LVMyoSeg does not guess values for them.")
        if first_geometry is None:
            first_geometry = geometry
        elif array.shape != frames[0].shape or not geometry.matches(first_geometry, GEOMETRY_TOLERANCE_MM):
            raise GeometryError(f"{path} does not match the geometry of {paths[0]} (size "
                                f"{array.shape[::-1]} vs {frames[0].shape[::-1]}, spacing {geometry.spacing} vs "
                                f"{first_geometry.spacing}, origin {geometry.origin} vs {first_geometry.origin}). "
                                "All phases of a cine must share one voxel grid.")
        frames.append(array)
    assert first_geometry is not None
    source = f"{len(paths)} frames from {paths[0].parent}"
    return Cine(np.stack(frames), first_geometry, np.arange(len(paths), dtype=np.float64), source=source)


def read_labels_4d(path: Path, cine: Cine) -> np.ndarray:
    """Label map ``[T, Z, Y, X]`` (uint8, values 0/1/2) from a 4D file on the grid of ``cine``."""
    volume = read_volume_4d(path)
    if volume.array.shape != cine.frames.shape:
        raise GeometryError(f"Labels {path} have shape {volume.array.shape} [T, Z, Y, X] but the cine "
                            f"({cine.source}) has {cine.frames.shape}; save labels on the cine's own grid.")
    if not volume.geometry.matches(cine.geometry, GEOMETRY_TOLERANCE_MM):
        raise GeometryError(f"Labels {path} are not aligned with the cine ({cine.source}): origin "
                            f"{volume.geometry.origin} vs {cine.geometry.origin}, spacing "
                            f"{volume.geometry.spacing} vs {cine.geometry.spacing}. Resample or re-export "
                            "the labels on the cine's grid.")
    return checked_label_map(volume.array, f"Labels {path}")


# ---------------------------------------------------------------- writing


def channel_path(path: Path, channel: str) -> Path:
    """``probabilities.nii.gz`` + ``myocardium`` -> ``probabilities_myocardium.nii.gz``."""
    path = Path(path)
    suffix = volume_suffix(path)
    stem = path.name[: len(path.name) - len(suffix)]
    return path.with_name(f"{stem}_{channel}{suffix}")


def _prepare(array: np.ndarray, kind: str, path: Path) -> np.ndarray:
    if kind == "labels":
        return checked_label_map(array, f"Label array for {path}")
    out = np.asarray(array, dtype=np.float32)
    if kind == "image" and out.size and np.array_equal(out, np.round(out)) \
            and -32768 <= out.min() and out.max() <= 32767:
        return out.astype(np.int16)  # whole-valued images (e.g. DICOM pixels) stored losslessly as int16
    if not np.all(np.isfinite(out)):
        raise InputError(f"Refusing to write {path}: the array holds NaN/Inf values.")
    if kind == "probabilities" and out.size and (out.min() < -1e-6 or out.max() > 1 + 1e-6):
        raise InputError(f"Refusing to write {path}: probabilities range {out.min():.3g}..{out.max():.3g}, "
                         "outside 0..1.")
    return out


def _nrrd_vector(v: Sequence[float]) -> str:
    return "(" + ",".join(repr(float(x)) for x in v) + ")"


def _write_nrrd(path: Path, array: np.ndarray, geometry: Geometry, times: np.ndarray, kind: str) -> None:
    """Slicer volume-sequence NRRD: sizes X Y Z T, list axis last, gzip, LPS."""
    t, z, y, x = array.shape
    axes = geometry.direction @ np.diag(geometry.spacing)
    ntype = {np.dtype(np.uint8): "uchar", np.dtype(np.int16): "short",
             np.dtype(np.float32): "float"}[array.dtype]
    time_text = " ".join(repr(float(v)) for v in times)
    header = "\n".join([
        "NRRD0004",
        "# LVMyoSeg 4D volume (3D Slicer volume sequence layout)",
        f"type: {ntype}",
        "dimension: 4",
        "space: left-posterior-superior",
        f"sizes: {x} {y} {z} {t}",
        "space directions: " + " ".join(_nrrd_vector(axes[:, i]) for i in range(3)) + " none",
        "kinds: domain domain domain list",
        'labels: "" "" "" "time"',
        'units: "" "" "" "ms"',
        "endian: little",
        "encoding: gzip",
        "space origin: " + _nrrd_vector(geometry.origin),
        "DataNodeClassName:=" + ("vtkMRMLLabelMapVolumeNode" if kind == "labels" else "vtkMRMLScalarVolumeNode"),
        "axis 3 index type:=numeric",
        f"axis 3 index values:={time_text}",
        f"{TRIGGER_TIMES_KEY}:={time_text}",
        f"{KIND_KEY}:={kind}",
    ]) + "\n\n"
    data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(gzip.compress(data.tobytes(), compresslevel=1, mtime=0))


def _write_nifti(path: Path, array: np.ndarray, geometry: Geometry, times: np.ndarray, kind: str) -> None:
    img = sitk.GetImageFromArray(array, isVector=False)
    step = float(np.mean(np.diff(times))) if len(times) > 1 else 1.0
    if not step > 0:
        step = 1.0
    direction = np.eye(4)
    direction[:3, :3] = geometry.direction
    img.SetSpacing((*geometry.spacing, step))
    img.SetOrigin((*geometry.origin, float(times[0]) if len(times) else 0.0))
    img.SetDirection(direction.ravel().tolist())
    img.SetMetaData("ITK_FileNotes", f"LVMyoSeg {kind}; {NIFTI_TIME_MARK}")
    sitk.WriteImage(img, str(path), useCompression=path.name.lower().endswith(".gz"))


def write_4d(path: Path, array: np.ndarray, geometry: Geometry, trigger_times_ms: Sequence[float],
             kind: str | None = None, channel_names: Sequence[str] = CHANNELS) -> list[Path]:
    """Write ``array [T, Z, Y, X]`` (or ``[T, Z, Y, X, C]``, one file per channel) on ``geometry``.

    ``kind`` is "image" / "probabilities" (float32) or "labels" (uint8, values 0/1/2); by
    default integer/bool arrays are labels and float arrays images. Format by extension
    (.nii, .nii.gz, .nrrd, .seq.nrrd). Nothing is left behind when writing fails. Returns
    the written paths.
    """
    path = Path(path)
    array = np.asarray(array)
    suffix = next((s for s in WRITE_SUFFIXES if path.name.lower().endswith(s)), "")
    if not suffix:
        raise InputError(f"Cannot write {path}: use a .nii, .nii.gz or .nrrd file name.")
    if kind is None:
        kind = "labels" if array.dtype.kind in "biu" else "image"
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    times = np.asarray(trigger_times_ms, dtype=np.float64).reshape(-1)
    if array.ndim == 5:
        if array.shape[-1] != len(channel_names):
            raise InputError(f"Cannot write {path}: {array.shape[-1]} channels but {len(channel_names)} "
                             f"channel names {list(channel_names)}.")
        items = [(channel_path(path, name), array[..., c]) for c, name in enumerate(channel_names)]
    elif array.ndim == 4:
        items = [(path, array)]
    else:
        raise InputError(f"Cannot write {path}: array of shape {array.shape} is not [T, Z, Y, X] "
                         "or [T, Z, Y, X, C].")
    if times.shape[0] != array.shape[0] or not np.all(np.isfinite(times)):
        raise InputError(f"Cannot write {path}: {times.shape[0]} trigger times for {array.shape[0]} phases.")
    prepared = [(target, _prepare(a, kind, target)) for target, a in items]
    for target, _ in prepared:
        if not target.parent.is_dir():
            raise InputError(f"Cannot write {target}: folder {target.parent} does not exist.")
        if target.is_dir():
            raise InputError(f"Cannot write {target}: a folder of that name is in the way.")
    writer = _write_nifti if suffix.startswith(".nii") else _write_nrrd
    try:
        with ExitStack() as files:  # every file is written before any replaces its target
            for target, data in prepared:
                writer(files.enter_context(atomic_path(target, suffix=f".partial{suffix}")), data, geometry,
                       times, kind)
    except (OSError, RuntimeError) as exc:
        raise InputError(f"Writing {path} failed: {exc}. Nothing was written; check the folder and "
                         "free disk space.") from None
    return [target for target, _ in prepared]
