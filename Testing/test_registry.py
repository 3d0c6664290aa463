"""The model-version registry: listing, registering (never overwriting), bundled model read-only,
damaged bundles refused, id resolution (also through the command line's --init)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tree

from LVMyoSegLib.errors import ModelError
from LVMyoSegLib.labels import CHANNELS
from LVMyoSegLib.model import registry
from LVMyoSegLib.model.bundle import BUNDLE_MANIFEST, read_manifest, verify_bundle, write_bundle
from LVMyoSegLib.resources import MODELS_DIR, bundled_model_dir

LOO_METRICS = {"before": {"dsc": {"mean": 0.61, "sd": 0.1, "folds": 3}},
               "after": {"dsc": {"mean": 0.74, "sd": 0.08, "folds": 3}}}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A real (tiny, untrained) one-member CNN bundle written by bundle.write_bundle."""
    from LVMyoSegLib.model import networks

    path = tmp_path_factory.mktemp("bundles") / "tiny-cnn"
    write_bundle(path, [networks.build_cnn(width=4, units=1, seed=0)], model_id="tiny-cnn", variant="cnn",
                 channels=CHANNELS, preprocessing={"pixel_mm": 2.0, "crop_size": 64},
                 metrics=LOO_METRICS, parent="bundled-parent")
    return path


def test_empty_registry_lists_the_bundled_model_first_and_read_only(tmp_path):
    for folder in (tmp_path / "missing", tmp_path):
        entries = registry.list_models(folder)
        assert [e.model_id for e in entries] == [registry.BUNDLED_ID]
        assert entries[0].read_only and entries[0].path == bundled_model_dir()
        installed = (bundled_model_dir() / BUNDLE_MANIFEST).is_file()
        assert (entries[0].problem == "") == installed
    assert registry.list_models(tmp_path, include_bundled=False) == []


def test_register_copies_a_verified_bundle_and_lists_it(bundle, tmp_path):
    before = tree(bundle)
    reg = tmp_path / "models"
    entry = registry.register(bundle, reg)
    assert entry.model_id == "tiny-cnn" and entry.path == reg / "tiny-cnn"
    assert (entry.variant, entry.members, entry.parent, entry.read_only) == ("cnn", 1, "bundled-parent", False)
    assert entry.metrics == "LOO DSC 0.740 (before 0.610)"
    assert "tiny-cnn" in entry.label() and "cnn" in entry.label()
    verify_bundle(entry.path)
    assert tree(bundle) == before  # the source is untouched
    listed = registry.list_models(reg)
    assert [e.model_id for e in listed] == [registry.BUNDLED_ID, "tiny-cnn"]
    assert listed[1] == entry
    assert registry.resolve("tiny-cnn", reg) == reg / "tiny-cnn"
    assert registry.resolve(str(bundle), reg) == bundle
    assert sorted(p.name for p in reg.iterdir()) == ["pins.json", "tiny-cnn"]  # no staging folder left


def test_register_never_overwrites(bundle, tmp_path):
    reg = tmp_path / "models"
    registry.register(bundle, reg)
    snapshot = tree(reg)
    with pytest.raises(ModelError, match="never overwritten"):
        registry.register(bundle, reg)
    assert tree(reg) == snapshot


def test_register_under_another_id_rewrites_only_the_id(bundle, tmp_path):
    reg = tmp_path / "models"
    entry = registry.register(bundle, reg, model_id="porcine-v2")
    manifest = verify_bundle(entry.path)
    assert manifest.model_id == "porcine-v2"
    original = json.loads((bundle / BUNDLE_MANIFEST).read_text())
    copied = json.loads((entry.path / BUNDLE_MANIFEST).read_text())
    assert {k: v for k, v in copied.items() if k != "model_id"} == \
        {k: v for k, v in original.items() if k != "model_id"}


@pytest.mark.parametrize("bad_id", ["bundled", "../escape", "a b", ".hidden", "x" * 101])
def test_bad_model_ids_are_refused(bundle, tmp_path, bad_id):
    with pytest.raises(ModelError):
        registry.register(bundle, tmp_path / "models", model_id=bad_id)
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_damaged_bundle_is_refused_and_leaves_nothing(bundle, tmp_path):
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for item in bundle.iterdir():
        (damaged / item.name).write_bytes(item.read_bytes())
    member = damaged / read_manifest(damaged).members[0]["file"]
    data = bytearray(member.read_bytes())
    data[len(data) // 2] ^= 0xFF
    member.write_bytes(bytes(data))
    reg = tmp_path / "models"
    with pytest.raises(ModelError, match="SHA-256"):
        registry.register(damaged, reg)
    assert not reg.exists()


def test_bundled_location_is_read_only(bundle, tmp_path):
    with pytest.raises(ModelError, match="read-only"):
        registry.register(bundle, MODELS_DIR)
    with pytest.raises(ModelError, match="read-only"):
        registry.new_model_dir(MODELS_DIR / "sub", "x")
    assert not (MODELS_DIR / "tiny-cnn").exists() and not (MODELS_DIR / "sub").exists()
    with pytest.raises(ModelError, match="bundled model"):
        registry.register(bundled_model_dir(), tmp_path / "models")


def test_resolve_explains_what_exists(bundle, tmp_path):
    reg = tmp_path / "models"
    registry.register(bundle, reg)
    with pytest.raises(ModelError, match="tiny-cnn"):
        registry.resolve("no-such-model", reg)
    if not (bundled_model_dir() / BUNDLE_MANIFEST).is_file():
        with pytest.raises(ModelError, match="not installed"):
            registry.resolve("bundled", reg)
    else:
        assert registry.resolve("bundled", reg) == bundled_model_dir()


def test_listing_skips_partial_folders_and_flags_unreadable_manifests(bundle, tmp_path):
    reg = tmp_path / "models"
    registry.register(bundle, reg)
    (reg / ".staging.abc").mkdir()
    (reg / "half-copied").mkdir()
    (reg / "broken").mkdir()
    (reg / "broken" / BUNDLE_MANIFEST).write_text("{not json")
    entries = {e.model_id: e for e in registry.list_models(reg, include_bundled=False)}
    assert sorted(entries) == ["broken", "tiny-cnn"]
    assert entries["broken"].problem.startswith("unreadable") and not entries["tiny-cnn"].problem


def test_registry_locations(tmp_path, monkeypatch):
    monkeypatch.delenv(registry.ENV_REGISTRY, raising=False)
    assert registry.default_registry_dir() == Path.home() / ".lvmyoseg" / "models"
    monkeypatch.setenv(registry.ENV_REGISTRY, str(tmp_path / "env"))
    assert registry.default_registry_dir() == tmp_path / "env"


def test_metrics_summary_forms():
    assert registry.metrics_summary({}) == ""
    assert registry.metrics_summary({"multi_level": {"dsc": {"mean": 0.8}}}) == "LOO DSC 0.800 (multi_level)"
    assert registry.metrics_summary({"dsc": {"mean": float("nan")}}) == ""
    cv = {"cross_validation": {"overall": {"dsc": {"mean": 0.8031}}}}
    assert registry.metrics_summary(cv) == "CV DSC 0.803"
    assert registry.metrics_summary({"multi_level": {"dsc": {"mean": 0.812}}, **cv}) == \
        "LOO DSC 0.812 (multi_level); CV DSC 0.803"


def test_command_line_init_resolves_registered_ids(bundle, tmp_path):
    from LVMyoSegLib.cli import main as cli
    from LVMyoSegLib.cli.model_commands import init_bundle, registry_dir

    reg = tmp_path / "models"
    registry.register(bundle, reg)
    assert init_bundle("tiny-cnn", reg) == reg / "tiny-cnn"
    assert init_bundle("scratch", reg) is None
    args = cli.build_parser().parse_args(["loo", "data", "-o", "out", "--init", "tiny-cnn", "--registry", str(reg)])
    assert registry_dir(args) == reg
    with pytest.raises(ModelError):
        init_bundle("not-registered", reg)
