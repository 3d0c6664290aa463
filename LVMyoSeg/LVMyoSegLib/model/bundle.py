"""Model bundles: a folder holding ``manifest.json`` and, per ensemble member, a ``.keras``
file (training) and an ``.onnx`` file (segmentation).

The manifest records the format version, the network variant, the output
channels, the preprocessing parameters the members were trained with, each
member's files with their SHA-256 (``file``/``sha256`` for Keras,
``onnx_file``/``onnx_sha256`` for ONNX), a training-data summary, metrics, the
parent model, the creation date and the package version. Loading verifies the
format and every hash before Keras or ONNX Runtime sees a file, and Keras loads in
safe mode (no Lambda layers or other arbitrary code). Segmentation opens the ONNX
members (:func:`LVMyoSegLib.model.onnx_runtime.load_onnx_ensemble`, no Keras needed);
training and evaluation use :func:`load_members` / :func:`load_ensemble` (Keras),
the latter building only the first member as a Keras model and reading the others'
weights. :func:`write_bundle` writes both files of every member.

Members are written compact (manifest entry ``"weight_storage": "16-bit per channel"``; a
multi-level member: 3.2 + 2.6 MB instead of 9.1 + 5.1 MB): every weight tensor of at least
:data:`~LVMyoSegLib.model.weight_storage.FIXED_POINT_MIN_SIZE` values (the convolution kernels)
is rounded once to 16-bit fixed point per channel (:mod:`LVMyoSegLib.model.weight_storage`,
:func:`stored_copy`). The ``.keras`` file holds that uncompiled copy (no optimizer state:
fine-tuning starts a new optimizer) in a deflated archive whose weights compress because of
the rounding; the ``.onnx`` file, exported from the same copy, keeps those kernels as int16
with a float32 step per channel (:mod:`LVMyoSegLib.model.onnx_export`). Both compute in
float32. On the sample study, against the float32 models of its training run, each member of the
bundled 5-member model moved the probabilities by at most 5.2e-4 and the ensemble (Keras and
ONNX) by at most 1.5e-4 (``tools/compact_check.py``); float16 storage moved a member's by up to
1e-2. Bundles written before (float32 weights, a ``.keras`` file with optimizer
state) load the same way.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import io
import json
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import ModelError
from ..files import atomic_folder, sha256_file, write_json_atomic
from .ensemble import Ensemble, architecture
from .rotations import ROTATIONS, check_rotations
from .weight_storage import FIXED_POINT_MIN_SIZE, fixed_point16

BUNDLE_FORMAT = "lvmyoseg-model-bundle"
BUNDLE_FORMAT_VERSION = 1
BUNDLE_MANIFEST = "manifest.json"  # a bundle folder's manifest
_WEIGHTS_ENTRY = "model.weights.h5"  # where a .keras archive keeps its weights
_MEMBER_FILES = (("file", "sha256"), ("onnx_file", "onnx_sha256"))  # a member's files and their hashes
WEIGHT_STORAGE = "16-bit per channel"  # how write_bundle stores the members' kernels (manifest "weight_storage")


@dataclass(frozen=True)
class Manifest:
    """The parsed ``manifest.json`` of a bundle."""

    model_id: str
    variant: str
    channels: tuple[str, ...]
    preprocessing: dict[str, Any]
    members: tuple[dict[str, Any], ...]
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None
    created: str = ""
    package_version: str = __version__
    inference: dict[str, Any] = field(default_factory=dict)  # {"rotations": n}: how it was evaluated

    @property
    def rotations(self) -> int:
        """Quarter-turned views to average at inference (:mod:`LVMyoSegLib.model.rotations`); 1 when unnamed."""
        return int(self.inference.get("rotations", 1))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_FORMAT_VERSION,
            "model_id": self.model_id,
            "variant": self.variant,
            "channels": list(self.channels),
            "preprocessing": self.preprocessing,
            "inference": self.inference,
            "members": [dict(m) for m in self.members],
            "training": self.training,
            "metrics": self.metrics,
            "parent": self.parent,
            "created": self.created,
            "package_version": self.package_version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: Path) -> "Manifest":
        if data.get("format") != BUNDLE_FORMAT:
            raise ModelError(f"{where} is not an LVMyoSeg model manifest (format {data.get('format')!r}). "
                             "Pick a folder made by `lvmyoseg train` or the bundled model.")
        version = data.get("format_version")
        if version != BUNDLE_FORMAT_VERSION:
            raise ModelError(f"{where} has bundle format version {version!r}; this LVMyoSeg "
                             f"({__version__}) reads version {BUNDLE_FORMAT_VERSION}. Update LVMyoSeg "
                             "or re-export the model with this version.")
        try:
            members = tuple(dict(file=str(m["file"]), sha256=str(m["sha256"]), **{
                k: v for k, v in m.items() if k not in ("file", "sha256")}) for m in data["members"])
            manifest = cls(model_id=str(data["model_id"]), variant=str(data["variant"]),
                           channels=tuple(data["channels"]), preprocessing=dict(data["preprocessing"]),
                           members=members, training=dict(data.get("training", {})),
                           metrics=dict(data.get("metrics", {})), parent=data.get("parent"),
                           created=str(data.get("created", "")),
                           package_version=str(data.get("package_version", "")),
                           inference=dict(data.get("inference", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{where} lacks or garbles the entry {exc}; the bundle is damaged. "
                             "Re-copy it from its source.") from None
        if not manifest.members:
            raise ModelError(f"{where} lists no member files; the bundle is empty.")
        if manifest.inference.get("rotations", 1) not in ROTATIONS:
            raise ModelError(f"{where}: inference.rotations {manifest.inference['rotations']!r} is not one of "
                             f"{', '.join(map(str, ROTATIONS))}; re-copy the bundle from its source.")
        from ..preprocessing.localisation import preprocessing_problem

        problem = preprocessing_problem(manifest.preprocessing)
        if problem:
            raise ModelError(f"{where}: its preprocessing block {problem}. The manifest was edited or written "
                             "by another program; re-copy the bundle from its source.")
        return manifest


def read_manifest(bundle_dir: Path) -> Manifest:
    """Parse and check a bundle's manifest (hashes are checked by :func:`verify_bundle`)."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / BUNDLE_MANIFEST
    if not path.is_file():
        raise ModelError(f"{bundle_dir} has no {BUNDLE_MANIFEST}: it is not an LVMyoSeg model bundle. "
                         "Pick the folder that holds manifest.json and the member .keras files.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON ({exc}); the bundle is damaged. "
                         "Re-copy it from its source.") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} does not hold a JSON object; the bundle is damaged.")
    return Manifest.from_dict(data, path)


def member_files(member: dict[str, Any]) -> list[tuple[str, str]]:
    """``(file name, SHA-256)`` of each file of one manifest member (``.keras``, then ``.onnx`` if any)."""
    return [(str(member[f]), str(member.get(h))) for f, h in _MEMBER_FILES if f in member]


def verify_bundle(bundle_dir: Path) -> Manifest:
    """Read the manifest, check it against its pin (:func:`~LVMyoSegLib.model.trust.bundle_trust`) and every
    member file's SHA-256; raise :class:`ModelError` if any differs."""
    from .trust import bundle_trust

    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    bundle_trust(bundle_dir)
    for member in manifest.members:
        for name, expected in member_files(member):
            path = bundle_dir / name
            if Path(name).name != name:
                raise ModelError(f"{bundle_dir / BUNDLE_MANIFEST} names member {name!r} outside "
                                 "the bundle folder; refusing it.")
            if not path.is_file():
                raise ModelError(f"Member file {path} listed in the manifest is missing; re-copy the bundle.")
            actual = sha256_file(path)
            if actual != expected:
                raise ModelError(f"Member file {path} does not match its SHA-256 in the manifest "
                                 f"(expected {expected}, found {actual}): it is damaged "
                                 "or was modified. Re-copy the bundle from its source.")
    return manifest


def member_count(bundle_dir: Path, manifest: Manifest, members: int | None) -> int:
    """``members`` (all of the bundle's when None), checked against the bundle's member count."""
    n = len(manifest.members) if members is None else int(members)
    if not 1 <= n <= len(manifest.members):
        raise ModelError(f"{bundle_dir} has {len(manifest.members)} members; asked for {members}. "
                         f"Choose between 1 and {len(manifest.members)}.")
    return n


def load_keras_file(path: Path):
    """One member file as a Keras model, in safe mode."""
    import keras

    # Register the project's serialisable layers, and the training loss that trained
    # members carry in their (unused, compile=False) training configuration.
    from . import losses, networks  # noqa: F401

    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path} matches its hash but is not a Keras model archive (a .keras file is a zip "
                         "archive): it was not written by LVMyoSeg. Re-export the bundle with `lvmyoseg train`.")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:
        text = str(exc)
        if "safe_mode" in text or "Lambda" in text or "lambda" in text:
            raise ModelError(f"{path} holds Python code (a Lambda layer or a reference to a Python function), "
                             "which LVMyoSeg never runs: it was not written by LVMyoSeg. Use a bundle made by "
                             "`lvmyoseg train` or the bundled model.") from None
        raise ModelError(f"Keras cannot load {path}: {text}. The file matches its hash, so it was "
                         "written by an incompatible LVMyoSeg/Keras version; retrain or re-export it.") from None


def _declared_width(manifest: Manifest) -> int | None:
    """The ResNet base width the manifest's training settings declare (None when they declare none)."""
    settings = manifest.training.get("settings") if isinstance(manifest.training, dict) else None
    cnn = settings.get("cnn") if isinstance(settings, dict) else None
    width = cnn.get("width") if isinstance(cnn, dict) else None
    return width if isinstance(width, int) else None


def _first_conv_filters(config: object) -> int | None:
    """Filters of the first Conv2D layer in a saved Keras config (the ResNet stem: its base width)."""
    if isinstance(config, dict):
        if config.get("class_name") == "Conv2D" and isinstance(config.get("config"), dict):
            return config["config"].get("filters")
        items = config.values()
    elif isinstance(config, list):
        items = config
    else:
        return None
    for value in items:
        found = _first_conv_filters(value)
        if found is not None:
            return found
    return None


def check_declared_architecture(path: Path, manifest: Manifest) -> None:
    """Refuse member ``path`` unless it is the manifest's variant (its model name) and base width."""
    config = _saved_config(path)
    name = config.get("config", {}).get("name") if isinstance(config.get("config"), dict) else None
    if name != manifest.variant:
        raise ModelError(f"{path} is a {name!r} network, but the manifest declares variant "
                         f"{manifest.variant!r}: the member was swapped or the manifest edited. Re-copy the "
                         "bundle from its source.")
    width, declared = _first_conv_filters(config), _declared_width(manifest)
    if declared is not None and width != declared:
        raise ModelError(f"{path} has base width {width}, but the manifest declares width {declared}: the "
                         "member was swapped or the manifest edited. Re-copy the bundle from its source.")


def load_members(bundle_dir: Path, members: int | None = None) -> tuple[Manifest, list]:
    """Verify a bundle and load its first ``members`` Keras models (all when None), in safe mode."""
    bundle_dir = Path(bundle_dir)
    manifest = verify_bundle(bundle_dir)
    n = member_count(bundle_dir, manifest, members)
    for m in manifest.members[:n]:
        check_declared_architecture(bundle_dir / m["file"], manifest)
    return manifest, [load_keras_file(bundle_dir / m["file"]) for m in manifest.members[:n]]


def load_ensemble(bundle_dir: Path, members: int | None = None) -> tuple[Manifest, Ensemble]:
    """Verify a bundle and load its first ``members`` members (all when None) for prediction.

    Returns ``(manifest, inference.Ensemble)``. The first member is loaded by Keras in
    safe mode; each other member must have its architecture
    (:func:`~LVMyoSegLib.model.ensemble.architecture` of its ``config.json``) and is read as
    weight arrays straight from its file, about a sixth of the time of building it as a
    Keras model. Weights that are not finite are refused.
    """
    bundle_dir = Path(bundle_dir)
    manifest = verify_bundle(bundle_dir)
    n = member_count(bundle_dir, manifest, members)
    files = [bundle_dir / m["file"] for m in manifest.members[:n]]
    for path in files:
        check_declared_architecture(path, manifest)
    model = load_keras_file(files[0])
    weights = [tuple(np.asarray(w) for w in model.get_weights())]
    if n > 1:
        paths = _weight_paths(model, weights[0])
        first = architecture(_saved_config(files[0]))
        for path in files[1:]:
            if architecture(_saved_config(path)) != first:
                raise ModelError(f"{path} does not have the architecture of {files[0].name}; the members "
                                 "of a bundle must share one. Re-export the bundle from one training run.")
            weights.append(_read_weights(path, paths, weights[0]))
    for path, arrays in zip(files, weights):
        if not all(np.isfinite(a).all() for a in arrays if np.issubdtype(a.dtype, np.floating)):
            raise ModelError(f"{path} holds NaN or infinite weights (its training diverged); it cannot "
                             "segment anything. Retrain it, or use another model.")
    return manifest, Ensemble(model, tuple(weights))


def _saved_config(path: Path) -> dict:
    """The ``config.json`` of the .keras archive ``path``."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ModelError(f"{path} matches its hash but is not a Keras model archive ({exc}): it was not "
                         "written by LVMyoSeg. Re-export the bundle with `lvmyoseg train`.") from None
    if not isinstance(config, dict):
        raise ModelError(f"{path} matches its hash but is not a Keras model archive (its config.json is "
                         "not an object). Re-export the bundle with `lvmyoseg train`.")
    return config


def _weight_paths(model, current: tuple) -> list[str]:
    """The dataset of each of ``model.weights`` in a Keras weights file, in that order.

    Learned from Keras's own writer: every variable is set to its index, the model's
    weights are saved, and each dataset's value names its variable; then the model gets
    its ``current`` weights (``model.get_weights()``) back.
    """
    import h5py

    variables = list(model.weights)
    with tempfile.TemporaryDirectory(prefix="lvmyoseg-layout-") as tmp:
        probe = Path(tmp) / "probe.weights.h5"
        try:
            for i, v in enumerate(variables):
                v.assign(np.full(tuple(v.shape), i, dtype=np.dtype(v.dtype)))
            model.save_weights(probe)
        finally:
            model.set_weights(current)
        found: dict[int, str] = {}
        with h5py.File(probe, "r") as f:
            def visit(name: str, obj) -> None:
                if isinstance(obj, h5py.Dataset) and obj.size:
                    found.setdefault(int(np.asarray(obj[()]).reshape(-1)[0]), name)
            f.visititems(visit)
    if sorted(found) != list(range(len(variables))):
        raise ModelError(f"Cannot match the weights of model {model.name} to the layout Keras saves them "
                         "in; this Keras version is not one LVMyoSeg supports. Install the Keras version "
                         "its requirements name.")
    return [found[i] for i in range(len(variables))]


def _read_weights(path: Path, paths: list[str], like: tuple) -> tuple:
    """The arrays at ``paths`` in the weights of the .keras file ``path``, checked against ``like``'s shapes."""
    import h5py

    try:
        with zipfile.ZipFile(path) as archive:
            data = archive.read(_WEIGHTS_ENTRY)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ModelError(f"{path} matches its hash but holds no Keras weights ({exc}): it was not written "
                         "by LVMyoSeg. Re-export the bundle with `lvmyoseg train`.") from None
    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            arrays = tuple(np.asarray(f[p][()]) for p in paths)
    except (KeyError, OSError) as exc:
        raise ModelError(f"{path} lacks weights the first member's architecture has ({exc}); it is not a "
                         "member of this ensemble. Re-export the bundle from one training run.") from None
    for p, a, ref in zip(paths, arrays, like):
        if a.shape != ref.shape:
            raise ModelError(f"{path}: weight {p} has shape {a.shape}, the first member's has {ref.shape}; "
                             "the members do not share one architecture. Re-export the bundle.")
    return arrays


def stored_copy(model):
    """What a bundle stores of Keras ``model``: an uncompiled copy (no optimizer state to save) whose
    kernels are rounded to 16-bit fixed point per channel of their last axis, power-of-two steps
    (:func:`fixed_point16`); ``model`` is unchanged."""
    import keras

    def rounded(weight: np.ndarray) -> np.ndarray:
        fixed = fixed_point16(weight, axis=-1, power_of_two=True)
        return weight if fixed is None else fixed[0].astype(np.float32) * fixed[1]

    copy = keras.models.clone_model(model)
    copy.set_weights([rounded(w) for w in model.get_weights()])
    return copy


def _shuffled_weights(data: bytes) -> bytes:
    """A Keras weights file (HDF5 bytes) with the HDF5 shuffle filter on every dataset of at least
    :data:`FIXED_POINT_MIN_SIZE` values: the same values (h5py and so Keras read them as before),
    grouped by byte so the archive's deflate compresses the low bytes that the rounding cleared."""
    import h5py

    def copy(source, target) -> None:
        target.attrs.update(source.attrs)
        for key, item in source.items():
            if isinstance(item, h5py.Group):
                copy(item, target.create_group(key))
            elif item.ndim > 0 and item.size >= FIXED_POINT_MIN_SIZE:
                target.create_dataset(key, data=item[()], shuffle=True).attrs.update(item.attrs)
            else:
                source.copy(item, target, name=key)

    out = io.BytesIO()
    with h5py.File(io.BytesIO(data), "r") as source, h5py.File(out, "w") as target:
        copy(source, target)
    return out.getvalue()


def _save_keras_member(model, path: Path) -> None:
    """Save ``model`` (a :func:`stored_copy`) as Keras does, then re-pack the archive deflated with its
    weights shuffled (:func:`_shuffled_weights`): Keras loads it as it loads its own files."""
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        entries = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, _shuffled_weights(data) if name == _WEIGHTS_ENTRY else data)


def write_bundle(bundle_dir: Path, models: list, *, model_id: str, variant: str,
                 channels: tuple[str, ...], preprocessing: dict[str, Any],
                 training: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
                 parent: str | None = None, member_info: list[dict[str, Any]] | None = None,
                 rotations: int = 1) -> Manifest:
    """Write a new bundle folder atomically, its members compact (:func:`stored_copy`); refuses to
    overwrite an existing one. ``rotations``: the views to average at inference (the evaluated setting)."""
    bundle_dir = Path(bundle_dir)
    if bundle_dir.exists():
        raise ModelError(f"{bundle_dir} already exists; model bundles are never overwritten. "
                         "Choose a new folder name.")
    inference = {"rotations": check_rotations(rotations, "rotations")}
    with atomic_folder(bundle_dir) as tmp:
        entries = []
        for i, model in enumerate(models):
            info = dict(member_info[i]) if member_info else {}
            entries.append({**_write_member(model, tmp, f"member_{i}"), **info})
        manifest = Manifest(model_id=model_id, variant=variant, channels=tuple(channels),
                            preprocessing=preprocessing, members=tuple(entries),
                            training=training or {}, metrics=metrics or {}, parent=parent,
                            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                            inference=inference)
        write_json_atomic(tmp / BUNDLE_MANIFEST, manifest.to_dict(), indent=2)
    return manifest


def _write_member(model, folder: Path, stem: str) -> dict[str, str]:
    """Write the compact member ``stem.keras`` + ``stem.onnx`` of Keras ``model`` into ``folder``, both
    from one :func:`stored_copy`; its manifest entries."""
    from .onnx_export import write_onnx

    stored = stored_copy(model)
    keras_file, onnx_file = folder / f"{stem}.keras", folder / f"{stem}.onnx"
    _save_keras_member(stored, keras_file)
    write_onnx(stored, onnx_file)
    return {"file": keras_file.name, "sha256": sha256_file(keras_file), "onnx_file": onnx_file.name,
            "onnx_sha256": sha256_file(onnx_file), "weight_storage": WEIGHT_STORAGE}


def add_onnx_members(source_dir: Path, bundle_dir: Path) -> Manifest:
    """A new bundle ``bundle_dir``: ``source_dir``'s manifest, each member re-written from its ``.keras``
    file as :func:`write_bundle` writes members (compact ``.keras`` + ``.onnx``); for bundles written
    before ONNX members or compact members.

    Atomic; refuses to overwrite an existing folder.
    """
    source_dir, bundle_dir = Path(source_dir), Path(bundle_dir)
    if bundle_dir.exists():
        raise ModelError(f"{bundle_dir} already exists; model bundles are never overwritten. "
                         "Choose a new folder name.")
    manifest, models = load_members(source_dir)
    with atomic_folder(bundle_dir) as tmp:
        entries = []
        for member, model in zip(manifest.members, models):
            entries.append({**member, **_write_member(model, tmp, Path(member["file"]).stem)})
        manifest = dataclasses.replace(manifest, members=tuple(entries))
        write_json_atomic(tmp / BUNDLE_MANIFEST, manifest.to_dict(), indent=2)
        verify_bundle(tmp)
    return manifest
