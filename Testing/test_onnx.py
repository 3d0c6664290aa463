"""ONNX members: the exported graphs equal the Keras models (int16 kernels included), bundles carry
compact members and check them, and segmentation runs in ONNX Runtime in a process where TensorFlow
and Keras cannot be imported."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from conftest import copy_with_flipped_byte  # noqa: E402

from LVMyoSegLib.errors import InputError, ModelError  # noqa: E402
from LVMyoSegLib.files import sha256_file  # noqa: E402
from LVMyoSegLib.labels import CHANNELS  # noqa: E402
from LVMyoSegLib.model import networks  # noqa: E402
from LVMyoSegLib.model.bundle import (  # noqa: E402
    BUNDLE_MANIFEST,
    WEIGHT_STORAGE,
    add_onnx_members,
    load_members,
    stored_copy,
    verify_bundle,
    write_bundle,
)
from LVMyoSegLib.model.ensemble import predict_ensemble  # noqa: E402
from LVMyoSegLib.model.onnx_export import to_onnx  # noqa: E402
from LVMyoSegLib.model.onnx_runtime import execution_providers, load_onnx_ensemble, session  # noqa: E402
from LVMyoSegLib.model.variants import VARIANTS  # noqa: E402
from LVMyoSegLib.resources import bundled_model_dir, sample_case_dir  # noqa: E402

TOL = 1e-3  # the contract: within 1e-3 of the Keras model
REPO = Path(__file__).resolve().parents[1]


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _nontrivial(model, seed: int):
    """Random BatchNorm statistics and non-zero peepholes, so folding and peepholes matter."""
    rng = np.random.default_rng(seed)
    cnn = model if model.name == "cnn" else networks.model_parts(model)[0]
    for layer in cnn.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.3, beta.shape),
                               rng.normal(0, 0.3, mean.shape), rng.uniform(0.5, 1.5, var.shape)])
    if model.name != "cnn":
        for layer in networks.model_parts(model)[1].layers:
            if isinstance(layer, networks.PeepholeConvLSTM2D):
                weights = layer.get_weights()
                layer.set_weights(weights[:3] + [rng.normal(0, 0.5, w.shape) for w in weights[3:]])
    return model


@pytest.fixture(scope="module")
def small_models():
    """One small model per variant (width 4, 2 units per stage), non-trivial BN and peepholes."""
    out = {}
    for variant in VARIANTS:
        cnn = networks.build_cnn(width=4, units=2, seed=1)
        out[variant] = _nontrivial(networks.build_model(variant, cnn, seed=2), seed=3)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_onnx_graph_equals_keras_model(small_models, variant) -> None:
    model = small_models[variant]
    sess = session(to_onnx(model).SerializeToString(), "cpu")
    for frames in (20, 25, 30):
        x = _x((2, frames, 32, 32, 1), seed=frames)
        expected = np.asarray(model(x, training=False))
        got = sess.run(None, {"cine": x})[0]
        assert got.shape == expected.shape == (2, frames, 32, 32, 2)
        assert np.abs(got - expected).max() < TOL, (variant, frames)


def test_circular_passes_and_other_sizes_are_exported() -> None:
    """Two warm-up passes (not only the product's one) and a non-square input give Keras' numbers."""
    cnn = networks.build_cnn(width=4, units=1, seed=5)
    model = _nontrivial(networks.build_model("multi_level", cnn, seed=6, circular_passes=2), seed=7)
    zero = _nontrivial(networks.build_model("one_level", networks.build_cnn(width=4, units=1, seed=5),
                                            seed=6, circular_passes=0), seed=7)
    x = _x((3, 7, 24, 40, 1))
    for m in (model, zero):
        got = session(to_onnx(m).SerializeToString(), "cpu").run(None, {"cine": x})[0]
        assert np.abs(got - np.asarray(m(x, training=False))).max() < TOL


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, small_models) -> Path:
    models = [small_models["multi_level"],
              _nontrivial(networks.build_model("multi_level", networks.build_cnn(width=4, units=2, seed=8),
                                               seed=9), seed=10)]
    path = tmp_path_factory.mktemp("bundles") / "onnx"
    write_bundle(path, models, model_id="onnx-test", variant="multi_level", channels=CHANNELS,
                 preprocessing={"pixel_mm": 2.0, "crop_size": 32})
    return path


@pytest.mark.slow
def test_bundle_members_carry_hashed_onnx_files_that_predict_like_keras(bundle) -> None:
    manifest = verify_bundle(bundle)
    for i, member in enumerate(manifest.members):
        assert member["onnx_file"] == f"member_{i}.onnx" and len(member["onnx_sha256"]) == 64
    _, models = load_members(bundle)
    x = _x((3, 20, 32, 32, 1), seed=4)
    expected = predict_ensemble(models, x)
    _, ensemble = load_onnx_ensemble(bundle, device="cpu")
    assert len(ensemble) == 2 and ensemble.provider == "CPUExecutionProvider" and ensemble.device == "CPU"
    for per_batch in (1, 2, 3):
        assert np.abs(ensemble.predict(x, slices_per_batch=per_batch) - expected).max() < TOL
    assert np.abs(ensemble.first(1).predict(x) - predict_ensemble(models[:1], x)).max() < TOL
    # 4 views: the mean of the turned copies' predictions, each turned back; ONNX and Keras alike
    by_hand = np.mean([np.rot90(ensemble.predict(np.rot90(x, k, axes=(2, 3))), -k, axes=(2, 3))
                       for k in range(4)], axis=0)
    averaged = ensemble.predict(x, rotations=4)
    assert np.abs(averaged - by_hand).max() < 1e-6 and np.abs(averaged - ensemble.predict(x)).max() > 1e-3
    assert np.abs(predict_ensemble(models, x, rotations=4) - averaged).max() < TOL


def test_damaged_or_missing_onnx_members_are_refused(bundle, tmp_path: Path) -> None:
    copy = copy_with_flipped_byte(bundle, tmp_path / "copy", "member_1.onnx")
    member = copy / "member_1.onnx"
    with pytest.raises(ModelError, match="member_1.onnx.*SHA-256"):
        load_onnx_ensemble(copy)
    member.unlink()
    with pytest.raises(ModelError, match="member_1.onnx.*missing"):
        load_onnx_ensemble(copy)


def test_onnx_member_of_another_variant_is_refused(bundle, small_models, tmp_path: Path) -> None:
    """A member's ONNX file swapped for another network, its hash recomputed in the manifest."""
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    (copy / "member_1.onnx").write_bytes(to_onnx(small_models["one_level"]).SerializeToString())
    manifest = json.loads((copy / BUNDLE_MANIFEST).read_text())
    manifest["members"][1]["onnx_sha256"] = sha256_file(copy / "member_1.onnx")
    (copy / BUNDLE_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="member_1.onnx is the ONNX graph 'lvmyoseg_one_level', but the "
                                         "manifest declares variant 'multi_level'"):
        load_onnx_ensemble(copy)
    shutil.copy2(bundle / "member_1.onnx", copy / "member_1.onnx")
    shutil.copy2(copy / "member_0.keras", copy / "member_1.keras")  # the .keras side is checked too
    manifest["members"][1].update(onnx_sha256=sha256_file(copy / "member_1.onnx"),
                                  sha256=sha256_file(copy / "member_1.keras"))
    (copy / BUNDLE_MANIFEST).write_text(json.dumps(manifest))
    load_onnx_ensemble(copy)  # the same variant: accepted
    small_models["one_level"].save(copy / "one.keras")
    (copy / "member_1.keras").unlink()
    (copy / "one.keras").rename(copy / "member_1.keras")
    manifest["members"][1]["sha256"] = sha256_file(copy / "member_1.keras")
    (copy / BUNDLE_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="member_1.keras is a 'one_level' network"):
        load_onnx_ensemble(copy)


def test_bundle_without_onnx_members_is_refused_then_converted(bundle, small_models, tmp_path: Path) -> None:
    """A bundle from before ONNX and compact members: member_0 a float32 .keras file with optimizer state
    (as Keras saves a compiled model), member_1 already compact; both come out compact."""
    old = tmp_path / "old"
    shutil.copytree(bundle, old)
    original = small_models["multi_level"]
    trained = keras.models.clone_model(original)
    trained.set_weights(original.get_weights())
    trained.compile(optimizer=keras.optimizers.Adam(), loss="binary_crossentropy")
    trained.optimizer.build(trained.trainable_variables)
    trained.save(old / "member_0.keras")
    manifest = json.loads((old / BUNDLE_MANIFEST).read_text())
    manifest["members"][0]["sha256"] = sha256_file(old / "member_0.keras")
    for member in manifest["members"]:
        (old / member.pop("onnx_file")).unlink()
        del member["onnx_sha256"], member["weight_storage"]
    (old / BUNDLE_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="no ONNX members.*export-onnx"):
        load_onnx_ensemble(old)
    new = tmp_path / "new"
    add_onnx_members(old, new)
    assert (new / "member_0.keras").stat().st_size < 0.6 * (old / "member_0.keras").stat().st_size
    _, (before_0, before_1) = load_members(old)
    _, (after_0, after_1) = load_members(new)
    for expected, got in ((stored_copy(before_0), after_0), (before_1, after_1)):  # compact twice: the same
        assert all(np.array_equal(a, b) for a, b in zip(expected.get_weights(), got.get_weights()))
    x = _x((1, 20, 32, 32, 1))
    _, ensemble = load_onnx_ensemble(new)  # verifies the new bundle, as segmentation does
    assert np.abs(ensemble.first(1).predict(x) - np.asarray(original(x, training=False))).max() < TOL
    run = lambda path: session(path.read_bytes(), "cpu").run(None, {"cine": x})[0]  # noqa: E731
    assert np.array_equal(run(new / "member_1.onnx"), run(bundle / "member_1.onnx"))
    with pytest.raises(ModelError, match="already exists"):
        add_onnx_members(old, new)


def test_onnx_kernels_are_stored_as_int16_and_computed_in_float32() -> None:
    """The product's width (16): int16 kernels + a float32 step per channel, float32 everywhere else,
    about half the float32 export, within the tolerance of the Keras model."""
    from onnx import TensorProto

    model = _nontrivial(networks.build_model("multi_level", networks.build_cnn(width=16, units=1, seed=11),
                                             seed=12), seed=13)
    compact, full = to_onnx(model), to_onnx(model, "float32")
    types = {t.data_type for t in compact.graph.initializer}
    assert TensorProto.INT16 in types and TensorProto.FLOAT16 not in types
    assert {t.data_type for t in full.graph.initializer} == {TensorProto.FLOAT, TensorProto.INT64}
    graph = compact.graph
    assert [i.type.tensor_type.elem_type for i in (*graph.input, *graph.output)] == [TensorProto.FLOAT] * 2
    casts = [n for n in graph.node if n.op_type == "Cast"]
    assert casts and all(a.i == TensorProto.FLOAT for n in casts for a in n.attribute if a.name == "to")
    compact_bytes = compact.SerializeToString()
    assert len(compact_bytes) < 0.6 * len(full.SerializeToString())
    x = _x((2, 20, 32, 32, 1), seed=14)
    got = session(compact_bytes, "cpu").run(None, {"cine": x})[0]
    assert got.dtype == np.float32 and np.abs(got - np.asarray(model(x, training=False))).max() < TOL
    with pytest.raises(ModelError, match="Unknown ONNX weight storage 'float16'"):
        to_onnx(model, "float16")


def test_execution_provider_choice() -> None:
    assert execution_providers("cpu") == ["CPUExecutionProvider"]
    assert execution_providers("auto")[-1] == "CPUExecutionProvider"
    with pytest.raises(InputError, match="Unknown device 'tpu'"):
        execution_providers("tpu")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(InputError, match="onnxruntime-gpu"):
            execution_providers("cuda")


def _sample_network_input(preprocessing: dict) -> np.ndarray:
    """The bundled sample study as the network sees it: ``[slices, frames, H, W, 1]``."""
    from LVMyoSegLib.io.volume_files import read_4d
    from LVMyoSegLib.preprocessing import preprocess
    from LVMyoSegLib.preprocessing.localisation import localise

    cine = read_4d(sample_case_dir() / "cine.nrrd")
    return preprocess.to_network(cine, localise(cine, **preprocessing))


@pytest.mark.slow
def test_shipped_bundle_is_compact_and_its_onnx_members_equal_its_keras_members() -> None:
    """The bundled model's members, stored compact (16-bit kernels), run through ONNX Runtime as through
    Keras: the 5-member ensemble's probabilities on the real sample study agree within 1e-3."""
    manifest, models = load_members(bundled_model_dir())
    assert all(m["weight_storage"] == WEIGHT_STORAGE for m in manifest.members)
    float32_onnx = len(to_onnx(models[0], "float32").SerializeToString())
    assert (bundled_model_dir() / manifest.members[0]["onnx_file"]).stat().st_size < 0.6 * float32_onnx
    x = _sample_network_input(manifest.preprocessing)[:3]
    _, ensemble = load_onnx_ensemble(bundled_model_dir(), device="cpu")
    assert np.abs(ensemble.predict(x) - predict_ensemble(models, x)).max() < TOL


_BLOCKER = """
import sys

class _NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"):
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, _NoTensorFlow())
"""


@pytest.mark.slow
def test_segment_runs_where_tensorflow_cannot_be_imported(bundle, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(textwrap.dedent(_BLOCKER))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(REPO / "LVMyoSeg")])}
    probe = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "blocked" in probe.stderr  # the blocker works
    # what the Slicer segmentation module imports in Slicer's process (its MRML parts where
    # slicer-core is installed)
    modules = ["model.registry", "app.process", "resources", "analysis.cardiac_function", "io.volume_files",
               "segmentation.pipeline", "io.dataset", "labels", "app.retraining", "model.onnx_runtime",
               "model.bundle", "model.trust", "cli.main", "segmentation.outputs", "analysis.function_report",
               "app.install", "app.jobs", "app.data_dirs", "app.result_selection"]
    if importlib.util.find_spec("slicer") is not None:
        modules += ["mrml", "app.results", "app.review", "app.display", "app.export", "app.segmentation"]
    imports = subprocess.run([sys.executable, "-c", "; ".join(f"import LVMyoSegLib.{m}" for m in modules)],
                             env=env, capture_output=True, text=True)
    assert imports.returncode == 0, imports.stderr
    out = tmp_path / "seg"
    run = subprocess.run([sys.executable, "-m", "LVMyoSegLib.cli", "segment", str(sample_case_dir() / "cine.nrrd"),
                          "-o", str(out), "--model", str(bundle), "--device", "cpu", "--no-overlay",
                          "--rotations", "2"], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode in (0, 3), run.stderr  # 3: the untrained model's function values withheld
    report = json.loads((out / "report.json").read_text())
    assert report["execution_provider"] == "CPUExecutionProvider" and report["device"] == "CPU"
    assert report["model"]["members_used"] == 2 and (out / "labels.nrrd").is_file()
    assert report["model"]["rotations"] == 2  # --rotations overrides the bundle's 1
