"""Python package installs of the Slicer modules (LVMyoSegLib.app.install), on this interpreter's packages."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from LVMyoSegLib import requirements
from LVMyoSegLib.app import install
from LVMyoSegLib.errors import InputError


def test_training_needs_everything_segmentation_needs_plus_tensorflow_and_keras():
    segment, train = install.requirements("segment"), install.requirements("train")
    assert segment == list(requirements.SEGMENT)  # one list: LVMyoSegLib.requirements
    assert set(segment) < set(train)
    names = {r.split(">")[0].split("<")[0].split("=")[0] for r in set(train) - set(segment)}
    assert names == {"tensorflow", "keras", "h5py", "onnx"}
    assert not any(r.startswith(("tensorflow", "keras")) for r in segment)
    assert any(r.startswith("onnxruntime") for r in segment)
    assert install.requirements("batch") == segment + list(requirements.BATCH)
    with pytest.raises(ValueError, match="unknown purpose"):
        install.requirements("export")


def test_missing_reports_absent_and_wrong_versions_never_slicers_own_packages():
    scipy = version("scipy")
    reqs = [f"scipy=={scipy}", "scipy<0.1", "no-such-package-lvmyoseg>=1", "numpy<0.1",
            "scipy<0.1; sys_platform == 'no-such-platform'"]
    assert install.missing(reqs) == ["scipy<0.1", "no-such-package-lvmyoseg>=1"]


def test_an_installed_alternative_meets_a_requirement(monkeypatch):
    # the way onnxruntime-gpu or onnxruntime-directml installed in place of onnxruntime meets it
    assert "onnxruntime-gpu>=1.17,<2" in requirements.ALTERNATIVES["onnxruntime"]
    monkeypatch.setitem(requirements.ALTERNATIVES, "no-such-package-lvmyoseg",
                        ("no-such-package-lvmyoseg-gpu>=1", f"scipy=={version('scipy')}"))
    assert install.missing(["no-such-package-lvmyoseg>=1"]) == []
    monkeypatch.setitem(requirements.ALTERNATIVES, "no-such-package-lvmyoseg", ("scipy<0.1",))
    assert install.missing(["no-such-package-lvmyoseg>=1"]) == ["no-such-package-lvmyoseg>=1"]


def test_installer_pins_slicers_packages_and_refuses_a_second_install_while_one_runs(monkeypatch):
    monkeypatch.setattr(requirements, "SEGMENT", ("scipy<0.1",))
    calls = []
    installer = None

    def pip(reqs, constraints):
        calls.append((reqs, constraints.read_text().split()))
        with pytest.raises(InputError, match="being installed"):  # Apply clicked again during pip's output
            installer.ensure("segment")
        monkeypatch.setattr(requirements, "SEGMENT", ())  # "installed"

    installer = install.Installer(pip)
    assert installer.ensure("segment", confirm=lambda needed: needed == ["scipy<0.1"])
    assert calls == [(["scipy<0.1"], [f"numpy=={version('numpy')}", f"SimpleITK=={version('SimpleITK')}"])]
    assert not installer.busy
    assert installer.ensure("segment")  # nothing missing: no second install
    assert len(calls) == 1


def test_a_declined_or_failed_install_says_so(monkeypatch):
    monkeypatch.setattr(requirements, "SEGMENT", ("scipy<0.1",))
    installer = install.Installer(lambda reqs, constraints: None)  # pip "succeeds" but installs nothing
    assert installer.ensure("segment", confirm=lambda needed: False) is False
    with pytest.raises(InputError, match="scipy<0.1 are still missing"):
        installer.ensure("segment")
    assert not installer.busy
