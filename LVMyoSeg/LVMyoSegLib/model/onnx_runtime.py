"""Ensemble prediction with ONNX Runtime: network-space ``[Z, T, H, W, 1]`` -> ``[Z, T, H, W, C]``.

Segmentation needs no TensorFlow or Keras: each ensemble member is the ONNX model
written next to its ``.keras`` file (:mod:`LVMyoSegLib.model.onnx_export`), run by one
ONNX Runtime session; the members' sigmoid probabilities are averaged.

Execution providers (``device``): ``"cuda"`` (package ``onnxruntime-gpu``),
``"directml"`` (``onnxruntime-directml``, Windows), ``"cpu"``, or ``"auto"``: the
first of CUDA, DirectML present, else the CPU. ONNX Runtime falls back to the CPU
when a GPU provider cannot start; :attr:`OnnxEnsemble.provider` names the one that
runs the first layer, as reported in ``report.json``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CancelledError, InputError, ModelError
from ..progress import CancelFn, ProgressEvent, ProgressFn
from .rotations import rotation_average

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "directml")
PROVIDERS = {"cuda": "CUDAExecutionProvider", "directml": "DmlExecutionProvider",
             "cpu": "CPUExecutionProvider"}
SLICES_PER_BATCH = 1
ONNX_FILE, ONNX_SHA256 = "onnx_file", "onnx_sha256"  # a member's keys in the manifest


def execution_providers(device: str = "auto") -> list[str]:
    """ONNX Runtime providers for ``device`` (one of :data:`DEVICES`), in order of preference."""
    import onnxruntime as ort

    if device not in DEVICES:
        raise InputError(f"Unknown device {device!r}; choose one of {', '.join(DEVICES)}.")
    available = ort.get_available_providers()
    if device == "auto":
        chosen = [p for p in (PROVIDERS["cuda"], PROVIDERS["directml"]) if p in available][:1]
    elif device == "cpu":
        chosen = []
    else:
        if PROVIDERS[device] not in available:
            package = {"cuda": "onnxruntime-gpu", "directml": "onnxruntime-directml"}[device]
            raise InputError(f"This ONNX Runtime ({ort.__version__}) has no {device} execution provider "
                             f"(it has {', '.join(available)}). Install {package} in place of onnxruntime, "
                             "or choose device 'auto' or 'cpu'.")
        chosen = [PROVIDERS[device]]
    return chosen + [PROVIDERS["cpu"]]


def _provider_options(provider: str) -> dict:
    # Take GPU memory as needed, not in doubling chunks: Slicer shares the GPU.
    return {"arena_extend_strategy": "kSameAsRequested"} if provider == PROVIDERS["cuda"] else {}


def session(model: bytes, device: str = "auto"):
    """One ONNX Runtime inference session of a serialised ONNX model."""
    import onnxruntime as ort

    providers = execution_providers(device)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no warnings on the user's console
    # Idle CPU threads sleep instead of spinning: with other work on the cores (Slicer, a
    # training run) spinning threads slowed the network 1.6x in the benchmark.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, sess_options=options,
                                providers=[(p, _provider_options(p)) for p in providers])


@dataclass(frozen=True, eq=False)
class OnnxEnsemble:
    """The ONNX Runtime sessions of an ensemble's members (one per member)."""

    sessions: tuple

    def __post_init__(self) -> None:
        if not self.sessions:
            raise InputError("No ensemble member to predict with.")

    @property
    def provider(self) -> str:
        """The execution provider that runs the network (e.g. ``CPUExecutionProvider``)."""
        return self.sessions[0].get_providers()[0]

    @property
    def device(self) -> str:
        """``"GPU"`` when a GPU provider runs the network, else ``"CPU"``."""
        return "CPU" if self.provider == PROVIDERS["cpu"] else "GPU"

    def first(self, n: int) -> "OnnxEnsemble":
        """The ensemble of the first ``n`` members."""
        if not 1 <= n <= len(self.sessions):
            raise InputError(f"The ensemble has {len(self.sessions)} members; asked for {n}.")
        return OnnxEnsemble(self.sessions[:n])

    def __len__(self) -> int:
        return len(self.sessions)

    def predict(self, x: np.ndarray, *, slices_per_batch: int = SLICES_PER_BATCH, rotations: int = 1,
                progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> np.ndarray:
        """Mean of the members' probabilities for ``x`` ``[Z, T, H, W, 1]``, over ``rotations``
        quarter-turned views (:mod:`LVMyoSegLib.model.rotations`).

        ``progress`` gets an event after each batch of slices of each
        member; ``cancel()`` is polled before each batch and raises
        :class:`CancelledError` when it returns True.
        """
        x = np.asarray(x)
        if x.ndim != 5 or x.shape[-1] != 1 or min(x.shape[:2]) < 1:
            raise InputError(f"Network input must be [slices, frames, H, W, 1] with at least one slice "
                             f"and frame, got {x.shape}.")
        if x.shape[2] % 4 or x.shape[3] % 4:
            raise InputError(f"Network input height and width must be multiples of 4, got {x.shape[2:4]}.")
        if int(slices_per_batch) < 1:
            raise InputError(f"slices_per_batch must be >= 1, got {slices_per_batch}.")
        return rotation_average(lambda view, events: self._predict(view, int(slices_per_batch), events, cancel),
                                np.asarray(x, dtype=np.float32), rotations, progress)

    def _predict(self, x: np.ndarray, batch: int, progress: ProgressFn | None,
                 cancel: CancelFn | None) -> np.ndarray:
        z, n = x.shape[0], len(self.sessions)
        total = np.zeros(x.shape[:-1] + (0,), np.float32)
        for k, sess in enumerate(self.sessions):
            name = sess.get_inputs()[0].name
            for start in range(0, z, batch):
                if cancel is not None and cancel():
                    raise CancelledError("Segmentation cancelled by the user; nothing was written.")
                stop = min(start + batch, z)
                out = sess.run(None, {name: x[start:stop]})[0]
                if not total.size:
                    total = np.zeros(x.shape[:-1] + out.shape[-1:], np.float32)
                total[start:stop] += out
                if progress is not None:
                    member = f"member {k + 1} of {n}, " if n > 1 else ""
                    progress(ProgressEvent((k * z + stop) / (n * z), f"{member}slices {start + 1}-{stop} of {z}",
                                           kind="slices", member=k, members=n))
        return total / np.float32(n)


def load_onnx_ensemble(bundle_dir: Path, members: int | None = None, device: str = "auto"):
    """Verify a bundle and open the ONNX members of its first ``members`` members (all when None).

    Returns ``(bundle.Manifest, OnnxEnsemble)``. Each ONNX file is read once, and the bytes
    given to ONNX Runtime are the bytes whose SHA-256 matched the manifest. Each member must be
    what the manifest declares, checked without Keras: its ``.keras`` file's saved configuration
    (:func:`~LVMyoSegLib.model.bundle.check_declared_architecture`: variant and base width) and its
    ONNX graph (:func:`check_onnx_architecture`: variant and output channels).
    """
    from .bundle import check_declared_architecture, member_count, verify_bundle

    bundle_dir = Path(bundle_dir)
    manifest = verify_bundle(bundle_dir)
    n = member_count(bundle_dir, manifest, members)
    sessions = []
    for member in manifest.members[:n]:
        if ONNX_FILE not in member:
            raise ModelError(f"{bundle_dir} has no ONNX members (member {member['file']} names none): it was "
                             "written before LVMyoSeg wrote ONNX members. Add them with `lvmyoseg export-onnx "
                             f"{bundle_dir} -o NEW_FOLDER` (needs the training requirements), then use the new folder.")
        check_declared_architecture(bundle_dir / member["file"], manifest)
        path = bundle_dir / member[ONNX_FILE]
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != member[ONNX_SHA256]:
            raise ModelError(f"Member file {path} changed while it was being loaded; re-copy the bundle.")
        try:
            sess = session(data, device)
        except InputError:
            raise
        except Exception as exc:  # ONNX Runtime's own errors (invalid graph, unknown op)
            raise ModelError(f"ONNX Runtime cannot load {path}: {exc}. The file matches its hash, so it was "
                             "written by an incompatible LVMyoSeg; update LVMyoSeg and ONNX Runtime.") from None
        check_onnx_architecture(path, sess, manifest)
        sessions.append(sess)
    return manifest, OnnxEnsemble(tuple(sessions))


def check_onnx_architecture(path: Path, sess, manifest) -> None:
    """Refuse the ONNX member ``path`` (open as ``sess``) unless its graph is the manifest's variant
    (graph name ``lvmyoseg_<variant>``, as :mod:`LVMyoSegLib.model.onnx_export` writes it) with one output
    channel per manifest channel."""
    graph = sess.get_modelmeta().graph_name
    if graph != f"lvmyoseg_{manifest.variant}":
        raise ModelError(f"{path} is the ONNX graph {graph!r}, but the manifest declares variant "
                         f"{manifest.variant!r} (graph 'lvmyoseg_{manifest.variant}'): the member was swapped or "
                         "the manifest edited. Re-copy the bundle from its source.")
    channels = sess.get_outputs()[0].shape[-1]
    if channels != len(manifest.channels):
        raise ModelError(f"{path} has {channels} output channels, but the manifest declares "
                         f"{len(manifest.channels)} ({', '.join(manifest.channels)}): the member was swapped or "
                         "the manifest edited. Re-copy the bundle from its source.")
