"""The background segmentation job of LV Myocardium Segmentation: validate the inputs, write the
cine for ``lvmyoseg segment``, and put the outputs into the scene when the run succeeds.

MRML through :mod:`LVMyoSegLib.mrml` (slicer-core runs it); the scene and a display callback are
passed in, so nothing here needs the Slicer application.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .. import mrml
from ..errors import InputError
from ..progress import ProgressFn
from . import install, results
from .jobs import Job


def chosen_rotations(views: str) -> int | None:
    """The test-time views of the module's choice (``"model's"``, ``"1"``, ``"2"`` or ``"4"``) as the
    ``rotations`` of :func:`segmentation_job` and ``batch_job``: None for the model's own."""
    return None if views == "model's" else int(views)


def segmentation_job(scene, sequence_node, model_dir: Path, *, temp_root: Path, members: int = 0,
                     threshold: float = 0.5, rv_insertion_node=None, device: str = "auto",
                     rotations: int | None = None,
                     on_progress: ProgressFn | None = None,
                     on_finished: Callable[[Job], None] | None = None,
                     show: Callable[[object, object], None] | None = None) -> Job:
    """A :class:`Job` that segments the cine ``sequence_node`` with the bundle ``model_dir``.

    Everything that can be refused is refused here, before a process starts: a running job is the
    runner's business, a missing package, a bad threshold, a cine that is not one, an RV insertion
    point off the image, a ``device`` (ONNX Runtime execution provider, ``lvmyoseg segment
    --device``) this ONNX Runtime lacks, a number of test-time views (``rotations``; None: the
    model's own) other than 1, 2 or 4. On success ``job.result`` holds the result nodes
    (``mrml.ResultNodes``), synchronised with the cine's browser, with their function tables;
    ``show(nodes, table)`` then displays them. The temporary folder (under ``temp_root``) is removed at every end.
    """
    from ..analysis.wall_thickness import rv_insertion_pixel
    from ..io.volume_files import write_4d
    from ..model.onnx_runtime import execution_providers
    from ..model.rotations import check_rotations

    if sequence_node is None:
        raise InputError("No cine selected; select the cine's volume sequence.")
    if not 0.0 < threshold < 1.0:
        raise InputError(f"Threshold {threshold} must lie strictly between 0 and 1.")
    missing = install.missing(install.requirements("segment"))
    if missing:
        raise InputError(f"Python packages missing: {', '.join(missing)}. Call ensureRequirements() "
                         "(the Apply button offers to install them).")
    execution_providers(device)
    if rotations is not None:
        check_rotations(rotations)
    cine = mrml.cine_from_sequence(sequence_node)  # validates the cine before anything runs
    rv_insertion = mrml.rv_insertion_lps(rv_insertion_node)  # an empty list, a point off the image: refused now
    if rv_insertion is not None:
        rv_insertion_pixel(rv_insertion, cine.geometry, cine.frames.shape[2:])
    work_dir = Path(tempfile.mkdtemp(prefix="LVMyoSeg-", dir=temp_root))
    try:
        input_path = work_dir / "cine.nrrd"
        write_4d(input_path, cine.frames, cine.geometry, cine.trigger_times_ms, kind="image")
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    args = ["segment", str(input_path), "-o", str(work_dir / "output"), "--model", str(model_dir),
            "--threshold", f"{threshold:g}", "--device", device, "--format", "nifti", "--no-overlay",
            "--progress-lines"]
    if members:
        args += ["--members", str(int(members))]
    if rotations is not None:
        args += ["--rotations", str(rotations)]

    def collect(job: Job) -> None:
        i = job.inputs
        probabilities, labels = results.read_outputs(job.work_dir / "output", i["cine"])
        nodes = mrml.add_results_to_scene(scene, i["sequence"], probabilities, labels, i["browser"],
                                          threshold=i["threshold"])
        results.set_rv_insertion(nodes.segmentation, i["rv_insertion"])
        table, _ = results.update_function_tables(scene, nodes.segmentation, labels)
        job.result = nodes
        if show is not None:
            show(nodes, table)

    return Job("segment", args, work_dir, what="segmentation", collect=collect,
               cleanup=lambda job: shutil.rmtree(job.work_dir, ignore_errors=True),
               on_progress=on_progress, on_finished=on_finished,
               inputs={"sequence": sequence_node, "browser": mrml.find_browser_node(scene, sequence_node),
                       "cine": cine, "threshold": threshold, "rv_insertion": rv_insertion_node})
