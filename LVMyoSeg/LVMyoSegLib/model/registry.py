"""The model-version registry: a per-user folder of model bundles, next to the read-only bundled model.

Layout: ``REGISTRY/<model_id>/`` holds one bundle (``manifest.json`` + member
files, see :mod:`LVMyoSegLib.model.bundle`). Versions are added with :func:`register`
(a verified copy; an existing version is never overwritten) or written in place
by ``lvmyoseg train --register``; either pins the version's manifest SHA-256 in
``REGISTRY/pins.json`` (:mod:`LVMyoSegLib.model.trust`), so a later edit is refused. The bundled model (``resources.bundled_model_dir``)
is listed first, is read-only, and answers to the id ``"bundled"``.

Where the registry is: the caller decides. 3D Slicer modules pass the folder of
:mod:`LVMyoSegLib.app.data_dirs` (a per-user local data folder); the command line
takes ``--registry DIR``, else :func:`default_registry_dir` (``$LVMYOSEG_REGISTRY``
or ``~/.lvmyoseg/models``).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..files import atomic_folder, is_folder_name, read_json, write_json_atomic
from ..resources import MODELS_DIR, bundled_model_dir
from .bundle import BUNDLE_MANIFEST, Manifest, member_files, read_manifest, verify_bundle
from .trust import bundle_trust, pin
from .variants import VARIANTS

ENV_REGISTRY = "LVMYOSEG_REGISTRY"
BUNDLED_ID = "bundled"


@dataclass(frozen=True)
class ModelEntry:
    """One model version as listed: where it is and what its manifest says.

    ``problem`` is empty for a usable entry; otherwise it says why the entry cannot be
    used (bundled model not installed, unreadable manifest, manifest changed since it was
    pinned). ``verified``: the manifest matches its pin (:mod:`LVMyoSegLib.model.trust`).
    """

    model_id: str
    path: Path
    variant: str = ""
    created: str = ""
    parent: str | None = None
    members: int = 0
    metrics: str = ""
    read_only: bool = False
    problem: str = ""
    verified: bool = False

    def label(self) -> str:
        """One line for a model selector."""
        if self.problem:
            return f"{self.model_id} ({self.problem})"
        parts = [self.variant, f"{self.members} member(s)"]
        if self.read_only:
            parts.insert(0, "bundled, read-only")
        if not self.verified:
            parts.insert(0, "UNVERIFIED")
        if self.created:
            parts.append(self.created[:10])
        if self.metrics:
            parts.append(self.metrics)
        return f"{self.model_id} ({', '.join(p for p in parts if p)})"


def default_registry_dir() -> Path:
    """``$LVMYOSEG_REGISTRY``, else ``~/.lvmyoseg/models`` (command-line default)."""
    env = os.environ.get(ENV_REGISTRY)
    return Path(env).expanduser() if env else Path.home() / ".lvmyoseg" / "models"


def check_model_id(model_id: str) -> str:
    """Return ``model_id`` if it can name a registry folder, else raise :class:`ModelError`."""
    if not is_folder_name(model_id):
        raise ModelError(f"Model id {model_id!r} must be 1-100 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit.")
    if model_id == BUNDLED_ID:
        raise ModelError(f"'{BUNDLED_ID}' names the bundled model; choose another model id.")
    return model_id


def metrics_summary(metrics: dict[str, Any]) -> str:
    """Short text of a manifest's metrics: ``"LOO DSC 0.842 (before 0.801)"``, with ``"; CV DSC 0.803"``
    when it carries a cross-validation summary, or ``""``."""
    def dsc(block: Any) -> float | None:
        value = block.get("dsc", {}).get("mean") if isinstance(block, dict) else None
        return float(value) if isinstance(value, (int, float)) and value == value else None

    if not isinstance(metrics, dict) or not metrics:
        return ""
    cv = metrics.get("cross_validation")
    cv_dsc = dsc(cv.get("overall")) if isinstance(cv, dict) else None
    cv_text = "" if cv_dsc is None else f"CV DSC {cv_dsc:.3f}"
    loo = ""
    if dsc(metrics.get("after")) is not None:
        before = dsc(metrics.get("before"))
        loo = f"LOO DSC {dsc(metrics['after']):.3f}" + (f" (before {before:.3f})" if before is not None else "")
    else:
        best = next((name for name in reversed(VARIANTS) if dsc(metrics.get(name)) is not None), None)  # paper's best first
        if best is not None:
            loo = f"LOO DSC {dsc(metrics[best]):.3f} ({best})"
        elif dsc(metrics) is not None:
            loo = f"DSC {dsc(metrics):.3f}"
    return "; ".join(t for t in (loo, cv_text) if t)


def _entry(path: Path, manifest: Manifest, read_only: bool, model_id: str | None = None) -> ModelEntry:
    """The entry of a readable bundle; raises :class:`ModelError` when its manifest differs from its pin."""
    return ModelEntry(model_id=model_id or manifest.model_id, path=path, variant=manifest.variant,
                      created=manifest.created, parent=manifest.parent, members=len(manifest.members),
                      metrics=metrics_summary(manifest.metrics), read_only=read_only,
                      verified=bundle_trust(path).verified)


def _is_within(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def bundled_entry() -> ModelEntry:
    """The bundled model's entry (with ``problem`` set when it is not installed or unreadable)."""
    path = bundled_model_dir()
    try:
        return _entry(path, read_manifest(path), read_only=True, model_id=BUNDLED_ID)
    except ModelError as exc:
        problem = "not installed" if not (path / BUNDLE_MANIFEST).is_file() else f"unreadable: {exc}"
        return ModelEntry(BUNDLED_ID, path, read_only=True, problem=problem)


def list_models(registry_dir: Path | None, *, include_bundled: bool = True) -> list[ModelEntry]:
    """The bundled model first, then every registered version (oldest first).

    Only manifests are read (no hashing), so listing is fast; :func:`resolve` and loading
    verify the member files. Folders without ``manifest.json`` (e.g. an interrupted copy) are
    skipped; a folder whose manifest is unreadable is listed with ``problem`` set.
    """
    entries = [bundled_entry()] if include_bundled else []
    registry_dir = Path(registry_dir) if registry_dir is not None else None
    if registry_dir is None or not registry_dir.is_dir():
        return entries
    found = []
    for folder in sorted(registry_dir.iterdir()):
        if folder.name.startswith(".") or not (folder / BUNDLE_MANIFEST).is_file():
            continue
        try:
            found.append(_entry(folder, read_manifest(folder), read_only=False, model_id=folder.name))
        except ModelError as exc:
            found.append(ModelEntry(folder.name, folder, problem=f"unreadable: {exc}"))
    found.sort(key=lambda e: (e.created, e.model_id))
    return entries + found


def resolve(model: str | Path | None, registry_dir: Path | None) -> Path:
    """Bundle folder of ``model``: ``"bundled"`` (or None/empty), a registered model id, or a bundle folder.

    A registered id wins over a same-named folder in the working directory. Raises
    :class:`ModelError` naming the registered ids when nothing matches.
    """
    text = "" if model is None else str(model).strip()
    if text in ("", BUNDLED_ID):
        path = bundled_model_dir()
        if not (path / BUNDLE_MANIFEST).is_file():
            raise ModelError(f"The bundled model is not installed at {path}; reinstall the extension or "
                             "give a registered model id or a model bundle folder.")
        return path
    if registry_dir is not None and is_folder_name(text) and (Path(registry_dir) / text / BUNDLE_MANIFEST).is_file():
        return Path(registry_dir) / text
    path = Path(text).expanduser()
    if (path / BUNDLE_MANIFEST).is_file():
        return path
    known = [e.model_id for e in list_models(registry_dir) if not e.problem]
    raise ModelError(f"No model {text!r}: it is neither a registered version in {registry_dir} nor a folder "
                     f"holding {BUNDLE_MANIFEST}. Available: {', '.join(known) or 'none'}.")


def new_model_dir(registry_dir: Path, model_id: str) -> Path:
    """Folder a new version ``model_id`` goes to; refuses the bundled location and existing ids."""
    registry_dir = Path(registry_dir)
    check_model_id(model_id)
    if _is_within(registry_dir, MODELS_DIR):
        raise ModelError(f"{registry_dir} is inside the extension's bundled models folder {MODELS_DIR}, "
                         "which is read-only; use a registry folder of your own (--registry).")
    target = registry_dir / model_id
    if target.exists():
        raise ModelError(f"Model version {model_id!r} already exists in {registry_dir}; versions are never "
                         "overwritten. Choose another model id.")
    if model_id == read_bundled_id():
        raise ModelError(f"{model_id!r} is the bundled model's id; choose another model id.")
    return target


def read_bundled_id() -> str | None:
    """``model_id`` in the bundled model's manifest (None when it is not installed)."""
    try:
        return read_manifest(bundled_model_dir()).model_id
    except ModelError:
        return None


def register(bundle_dir: Path, registry_dir: Path, *, model_id: str | None = None) -> ModelEntry:
    """Copy a verified bundle into the registry as ``model_id`` (default: its manifest's id).

    The member files are hash-checked before and after copying; the copy appears under its
    final name only when complete. Refuses a damaged bundle, the bundled model itself, a
    registry inside the bundled models folder and an id that exists already.
    """
    bundle_dir = Path(bundle_dir)
    if _is_within(bundle_dir, bundled_model_dir()):
        raise ModelError(f"{bundle_dir} is the bundled model; it is always available as '{BUNDLED_ID}' "
                         "and is not registered again.")
    manifest = verify_bundle(bundle_dir)
    model_id = model_id or manifest.model_id
    target = new_model_dir(registry_dir, model_id)
    with atomic_folder(target) as staging:
        for member in manifest.members:
            for name, _ in member_files(member):
                shutil.copy2(bundle_dir / name, staging / name)
        data = read_json(bundle_dir / BUNDLE_MANIFEST, "Register the model again from its source.")
        data["model_id"] = model_id
        write_json_atomic(staging / BUNDLE_MANIFEST, data, indent=2)
        copied = verify_bundle(staging)
        if target.exists():
            raise ModelError(f"Model version {model_id!r} appeared in {registry_dir} while copying; "
                             "it was not overwritten. Choose another model id.")
    pin(registry_dir, model_id, target)
    return _entry(target, copied, read_only=False, model_id=model_id)
