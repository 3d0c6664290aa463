"""The Python requirements of LVMyoSeg, one list per purpose (``pyproject.toml`` mirrors them).

- :data:`SEGMENT`: what segmentation needs (the core install; ONNX Runtime, no
  TensorFlow or Keras);
- :data:`TRAIN`: what training adds (the ``train`` extra): TensorFlow, Keras pinned
  to the versions that read and write the bundles' ``.keras`` members (Keras 3.11-3.14
  cannot deserialise them; checked by loading the bundled model), h5py, and ``onnx``
  to write the bundles' ONNX members;
- :data:`BATCH`: what ``lvmyoseg batch`` adds (Dask; in the core install, installed into
  Slicer only for its Batch section);
- :data:`SEGMENT_GPU` / :data:`TRAIN_GPU`: what to install in place of ``onnxruntime``,
  resp. in addition, to use a GPU; :data:`ALTERNATIVES`: which installed packages meet a
  requirement in its place (``onnxruntime-gpu`` meets ``onnxruntime``).

The Slicer modules (:mod:`LVMyoSegLib.app.install`) install :data:`SEGMENT` on first
segmentation and :data:`TRAIN` on first training (without NumPy and SimpleITK, which Slicer ships).
"""

from __future__ import annotations

ONNXRUNTIME = "onnxruntime>=1.17,<2"

SEGMENT: tuple[str, ...] = (
    "numpy>=1.26,<3",
    "scipy>=1.11,<2",
    "SimpleITK>=2.3,<3",
    "pydicom>=2.4,<4",
    "scikit-image>=0.22,<0.27",
    "matplotlib>=3.8,<4",
    ONNXRUNTIME,
)

TRAIN: tuple[str, ...] = (
    "tensorflow>=2.18,<2.22",
    "keras>=3.15,<3.16",
    "h5py>=3.10,<4",  # member weights read directly (bundle.load_ensemble); Keras needs it too
    "onnx>=1.16,<2",  # writes the ONNX members (onnx_export)
)

BATCH: tuple[str, ...] = (  # lvmyoseg batch: Dask (core dependencies; a separate Slicer install)
    "dask>=2024.8",
    "distributed>=2024.8",
)

# ONNX Runtime builds with a GPU execution provider; each replaces ONNXRUNTIME.
SEGMENT_GPU: dict[str, str] = {
    "cuda": "onnxruntime-gpu>=1.17,<2",          # NVIDIA, Linux and Windows
    "directml": "onnxruntime-directml>=1.17,<2",  # any DirectX 12 GPU, Windows
}

# Packages that meet a requirement in its place (by requirement name): a GPU build of ONNX Runtime
# installed instead of onnxruntime satisfies SEGMENT.
ALTERNATIVES: dict[str, tuple[str, ...]] = {"onnxruntime": tuple(SEGMENT_GPU.values())}

# TensorFlow with its CUDA libraries, for training on an NVIDIA GPU (Linux only).
TRAIN_GPU: tuple[str, ...] = ("tensorflow[and-cuda]>=2.18,<2.22; sys_platform == 'linux'",)
