"""Which model bundles are verified: a trust anchor the bundle itself cannot rewrite.

A bundle's manifest lists each member file's SHA-256, so the member hashes prove only that
the files match their manifest. What vouches for the manifest:

- the bundled model: its manifest's SHA-256 is pinned in this module
  (:data:`BUNDLED_MANIFEST_SHA256`), which ships with the code;
- a registered version: its manifest's SHA-256 is written to the registry's
  :data:`PINS_NAME` when it is registered (:func:`pin`);
- any other folder: nothing. It loads, but is reported as unverified.

A bundle whose manifest differs from its pin is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError
from ..files import write_json_atomic
from .bundle import BUNDLE_MANIFEST

# SHA-256 of Resources/Models/sunnybrook-multilevel/manifest.json. Update it (only here) when the
# bundled model is replaced; Testing/test_trust.py checks that the shipped bundle matches it.
BUNDLED_MANIFEST_SHA256 = "33129ab7a6de9bdb8ce8c231808deeca53e5239fbe5ea52ff7709bb1da89a9d3"

PINS_NAME = "pins.json"  # in a registry folder: {model_id: manifest SHA-256}


@dataclass(frozen=True)
class Trust:
    """Whether a bundle's manifest is vouched for, and by what (for report.json and the Slicer module)."""

    verified: bool
    anchor: str  # "bundled", "registry" or "none"
    note: str

    def to_dict(self) -> dict[str, object]:
        return {"verified": self.verified, "anchor": self.anchor, "note": self.note}


def manifest_sha256(bundle_dir: Path) -> str:
    """SHA-256 of a bundle's ``manifest.json`` bytes."""
    path = Path(bundle_dir) / BUNDLE_MANIFEST
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise ModelError(f"Cannot read {path}: {exc.strerror or exc}. Pick a model bundle folder you can "
                         "read.") from None


def _same(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def read_pins(registry_dir: Path) -> dict[str, str]:
    """The registry's pins ({} when it has none or they are unreadable)."""
    try:
        pins = json.loads((Path(registry_dir) / PINS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in pins.items()} if isinstance(pins, dict) else {}


def pin(registry_dir: Path, model_id: str, bundle_dir: Path) -> None:
    """Record the manifest SHA-256 of ``bundle_dir`` as the pin of ``model_id`` in ``registry_dir``."""
    pins = read_pins(registry_dir)
    pins[model_id] = manifest_sha256(bundle_dir)
    write_json_atomic(Path(registry_dir) / PINS_NAME, pins, indent=1)


def bundle_trust(bundle_dir: Path) -> Trust:
    """The trust of ``bundle_dir``; raises :class:`ModelError` when its manifest differs from its pin."""
    from ..resources import bundled_model_dir

    bundle_dir = Path(bundle_dir)
    actual = manifest_sha256(bundle_dir)
    if _same(bundle_dir, bundled_model_dir()):
        if actual != BUNDLED_MANIFEST_SHA256:
            raise ModelError(f"The bundled model's manifest {bundle_dir / BUNDLE_MANIFEST} is not the one this "
                             f"LVMyoSeg version shipped with (SHA-256 {actual}, expected "
                             f"{BUNDLED_MANIFEST_SHA256}): it was modified. Reinstall LVMyoSeg.")
        return Trust(True, "bundled", "the bundled model, pinned in this LVMyoSeg version")
    registry = bundle_dir.resolve().parent
    pinned = read_pins(registry).get(bundle_dir.resolve().name)
    if pinned is not None:
        if actual != pinned:
            raise ModelError(f"Model {bundle_dir.name!r} in {registry} was modified after it was registered: "
                             f"its manifest's SHA-256 is {actual}, the registry pinned {pinned}. Register "
                             "the model again from its source.")
        return Trust(True, "registry", f"registered in {registry}")
    return Trust(False, "none", f"{bundle_dir} is neither the bundled model nor a registered version; its "
                                "files match its own manifest, but nothing vouches for that manifest")
