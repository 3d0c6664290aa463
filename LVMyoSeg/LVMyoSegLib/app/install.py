"""The Python packages the Slicer modules install into Slicer's Python, and how.

Three purposes: ``"segment"`` (what LV Myocardium Segmentation needs, in its background process
and for Threshold, Recompute and Export in Slicer itself: ONNX Runtime, no TensorFlow),
``"train"`` (``"segment"`` plus TensorFlow, Keras, h5py and onnx; LV Myocardium Trainer installs
them on the first training, never on the first segmentation) and ``"batch"`` (``"segment"`` plus
Dask, for the Batch section). Slicer's own NumPy and SimpleITK are never replaced: installs run with a
constraints file that pins them to the installed versions.

:func:`requirements` reads the lists from :mod:`LVMyoSegLib.requirements` (which pyproject.toml
mirrors).
"""

from __future__ import annotations

import importlib
import os
import socket
import tempfile
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .. import requirements as _requirements
from ..errors import InputError

PURPOSES = ("segment", "train", "batch")
# Slicer ships its own builds of these; installing never replaces them.
PROTECTED_PACKAGES = ("numpy", "SimpleITK")


def requirements(purpose: str) -> list[str]:
    """Requirement strings of ``purpose`` (``"train"`` and ``"batch"`` include ``"segment"``), from
    :mod:`LVMyoSegLib.requirements`."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r}; one of {PURPOSES}")
    extra = {"segment": (), "train": _requirements.TRAIN, "batch": _requirements.BATCH}[purpose]
    return list(_requirements.SEGMENT) + list(extra)


def _installed_fits(req) -> bool:
    """Whether ``req`` (a ``packaging`` Requirement) is installed in a fitting version."""
    try:
        return req.specifier.contains(version(req.name), prereleases=True)
    except PackageNotFoundError:
        return False


def missing(reqs: Sequence[str]) -> list[str]:
    """The requirements of this platform that are not installed in a fitting version (protected
    packages are never reported: Slicer provides them; a requirement one of whose
    :data:`~LVMyoSegLib.requirements.ALTERNATIVES` is installed, e.g. ``onnxruntime-gpu`` for
    ``onnxruntime``, is met)."""
    from packaging.requirements import Requirement

    importlib.invalidate_caches()
    protected = {p.lower() for p in PROTECTED_PACKAGES}
    result = []
    for line in reqs:
        req = Requirement(line)
        if (req.marker is not None and not req.marker.evaluate()) or req.name.lower() in protected:
            continue
        alternatives = [Requirement(a) for a in _requirements.ALTERNATIVES.get(req.name.lower(), ())]
        if not any(_installed_fits(r) for r in [req, *alternatives]):
            result.append(line)
    return result


def protected_pins() -> list[str]:
    """``name==version`` of each protected package that is installed."""
    pins = []
    for name in PROTECTED_PACKAGES:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pass
    return pins


def pypi_reachable(timeout_s: float = 3.0, host: str = "pypi.org") -> bool:
    """Whether the package index answers at all (self-tests skip installs without a network)."""
    try:
        with socket.create_connection((host, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


Install = Callable[[list[str], Path], None]  # (requirement strings, constraints file) -> installed, or raises


class Installer:
    """Installs what a purpose needs, once at a time.

    ``confirm(missing)`` asks the user (False: declined); ``install(missing, constraints)`` runs
    pip. While an install runs, :attr:`busy` is true for every installer and a second
    :meth:`ensure` is refused, so a button clicked again (in either module) while pip's output
    keeps the GUI alive starts nothing.
    """

    busy = False  # one install at a time in the whole application, whichever module asks

    def __init__(self, install: Install) -> None:
        self._install = install

    def ensure(self, purpose: str, confirm: Callable[[list[str]], bool] | None = None) -> bool:
        """True when everything ``purpose`` needs is installed (installing it first if the user agrees)."""
        if self.busy:
            raise InputError("Python packages are being installed; wait until the installation has finished.")
        needed = missing(requirements(purpose))
        if not needed:
            return True
        if confirm is not None and not confirm(needed):
            return False
        Installer.busy = True
        fd, constraints = tempfile.mkstemp(prefix="LVMyoSeg-constraints-", suffix=".txt")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write("\n".join(protected_pins()) + "\n")
            self._install(needed, Path(constraints))
        finally:
            os.remove(constraints)
            Installer.busy = False
        still = missing(requirements(purpose))
        if still:
            raise InputError(f"After installation {', '.join(still)} are still missing or of the wrong version; "
                             "see the Python console, or restart 3D Slicer and try again.")
        return True


def ask_in_slicer(slicer, needed: list[str]) -> bool:
    """Ask the 3D Slicer user whether to install ``needed``; whether they agreed."""
    size = (" TensorFlow is a large download (several hundred MB); this can take several minutes."
            if any(r.lower().startswith("tensorflow") for r in needed) else "")
    return bool(slicer.util.confirmOkCancelDisplay(
        "LVMyoSeg needs Python packages that are not installed in 3D Slicer:\n\n" + "\n".join(needed)
        + f"\n\nInstall them now?{size} Slicer's own NumPy and SimpleITK are kept.",
        "LVMyoSeg: install Python packages"))


def install_in_slicer(slicer, reqs: list[str], constraints: Path) -> None:
    """Run pip inside 3D Slicer: ``slicer.pydeps.pip_ensure`` where the running Slicer has it
    (5.11 and later; it shows a modal progress dialog), else ``slicer.util.pip_install``."""
    from subprocess import CalledProcessError

    try:
        import slicer.pydeps as pydeps  # noqa: PLC0415 - only in Slicer 5.11 and later
    except ImportError:
        pydeps = None
    try:
        if pydeps is not None and hasattr(pydeps, "pip_ensure"):
            from packaging.requirements import Requirement

            # the user has already agreed; the self-tests install too (skip_in_testing=False)
            pydeps.pip_ensure([Requirement(r) for r in reqs], constraints=str(constraints), prompt_install=False,
                              requester="LVMyoSeg", skip_in_testing=False)
        else:
            slicer.util.pip_install(["-c", str(constraints), *reqs])
    except CalledProcessError as exc:
        raise InputError(f"pip could not install {', '.join(reqs)} while keeping {', '.join(protected_pins())} "
                         f"(exit code {exc.returncode}); see the Python console for pip's message.") from None
