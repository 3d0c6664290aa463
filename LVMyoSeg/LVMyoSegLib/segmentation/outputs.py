"""What ``lvmyoseg segment`` writes: 4D probability and label files aligned with the input,
``report.json`` (geometry, model, timings, cardiac function) and an overlay PNG montage.

The caller gives the folder to write into: the staging folder of
:func:`LVMyoSegLib.files.output_folder`, so a failure never leaves a half-written output folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..cine import Cine
from ..labels import CHANNELS
from .pipeline import SegmentationResult

EXTENSIONS = {"nifti": ".nii.gz", "nrrd": ".nrrd"}


def default_format(input_path: Path) -> str:
    """The output format for ``input_path`` when none is asked for: NRRD for NRRD input, else NIfTI."""
    return "nrrd" if Path(input_path).name.lower().endswith((".nrrd", ".nhdr")) else "nifti"


def output_names(file_format: str) -> dict[str, str]:
    """File names of the outputs for ``file_format`` ("nifti" or "nrrd")."""
    ext = EXTENSIONS[file_format]
    names = {f"probabilities_{c}": f"probabilities_{c}{ext}" for c in CHANNELS}
    names["labels"] = f"labels{ext}"
    names["report"] = "report.json"
    names["overlay"] = "overlay.png"
    names["volume_curve"] = "volume_curve.png"
    names["thickness"] = "wall_thickness.png"
    names["preprocessing"] = "preprocessing.png"
    return names


def write_segmentation_outputs(folder: Path, cine: Cine, result: SegmentationResult, *, model_dir: Path,
                               file_format: str = "nifti", read_seconds: float = 0.0,
                               overlay: bool = True, rv_insertion_lps: Sequence[float] | None = None
                               ) -> tuple[list[str], str | None]:
    """Write all outputs of one segmented study into the empty ``folder`` (the staging folder of
    :func:`LVMyoSegLib.files.output_folder`); returns the written file names and the reason the
    function values were withheld (None when they were reported; see :mod:`LVMyoSegLib.analysis.function_report`).

    ``rv_insertion_lps`` (anterior RV insertion point, LPS mm) numbers the thickness sectors as
    AHA segments.
    """
    from ..analysis.function_report import assess
    from ..io.volume_files import write_4d
    from ..reporting.figures import overlay_montage, plot_thickness, plot_volume_curve, preprocessing_figure

    names = output_names(file_format)
    staging = Path(folder)
    t0 = time.perf_counter()
    for c, channel in enumerate(CHANNELS):
        write_4d(staging / names[f"probabilities_{channel}"], result.probabilities[..., c],
                 cine.geometry, cine.trigger_times_ms, kind="probabilities")
    write_4d(staging / names["labels"], result.label_map, cine.geometry, cine.trigger_times_ms,
             kind="labels")
    write_s = time.perf_counter() - t0

    loc = result.transform.localisation
    assessed = assess(result.label_map, cine.geometry, cine.trigger_times_ms,
                      probabilities=result.probabilities, rv_insertion=rv_insertion_lps,
                      localisation_fallback=None if loc is None else loc.fallback)
    function = assessed.function
    if overlay:
        preprocessing_figure(cine, result.transform, staging / names["preprocessing"])
        frames = [function.ed_frame, function.es_frame] if function else [0, cine.n_phases // 2]
        overlay_montage(cine, result.label_map, frames, staging / names["overlay"])
        if function is not None:
            plot_volume_curve(function, staging / names["volume_curve"])
            plot_thickness(function, staging / names["thickness"])
    report = {
        "lvmyoseg_version": __version__,
        "input": cine.summary(),
        "model": {"id": result.model_id, "dir": str(model_dir), "members_used": result.members,
                  "rotations": result.rotations, "trust": result.trust},
        "threshold": result.threshold,
        "device": result.device,
        "execution_provider": result.execution_provider,
        "outputs": {k: v for k, v in names.items() if (staging / v).exists() or k == "report"},
        "label_values": {"0": "background", "1": "LV myocardium", "2": "LV blood pool"},
        "timing_s": {"read": round(read_seconds, 3),
                     **{k: round(v, 3) for k, v in result.timings_s.items()},
                     "write": round(write_s, 3)},
        "crop_transform": result.transform.to_dict(),
        "rv_insertion_lps_mm": None if rv_insertion_lps is None else [float(v) for v in rv_insertion_lps],
        **assessed.to_dict(),
    }
    (staging / names["report"]).write_text(json.dumps(report, indent=2, allow_nan=False),
                                           encoding="utf-8")
    written = sorted(item.name for item in staging.iterdir())
    return written, assessed.withheld


