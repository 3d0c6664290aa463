"""The segmentation commands: ``inspect``, ``preprocess``, ``segment``, ``batch``, ``demo``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..errors import EXIT_FUNCTION_WITHHELD, CancelledError, InputError, ModelError
from .printing import add_progress_option, progress_printer


def _output_format(input_path: Path, requested: str | None) -> str:
    from ..segmentation.outputs import default_format

    return requested or default_format(input_path)


def cmd_inspect(args: argparse.Namespace) -> int:
    from ..io.readers import read_cine

    cine = read_cine(Path(args.path), series_uid=args.series)
    info = cine.summary()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"{info['source']}: T={info['T']} phases, Z={info['Z']} slices, "
              f"{info['shape_tzyx'][3]}x{info['shape_tzyx'][2]} pixels, spacing (x, y, z) "
              f"{', '.join(f'{s:.3f}' for s in info['spacing_mm_xyz'])} mm")
        print("trigger times (ms): " + ", ".join(f"{t:.1f}" for t in info["trigger_times_ms"]))
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from ..files import output_folder, write_json_atomic
    from ..io.cine_checks import check_short_axis_cine
    from ..io.readers import read_cine
    from ..model.bundle import verify_bundle
    from ..preprocessing.localisation import localise
    from ..reporting.figures import preprocessing_figure
    from ..resources import bundled_model_dir

    out = Path(args.output)
    model_dir = Path(args.model) if args.model else bundled_model_dir()
    manifest = verify_bundle(model_dir)  # its grid is the one `segment` with this model crops to
    with output_folder(out, overwrite=args.overwrite, written_by="lvmyoseg preprocess",
                       protect=[Path(args.path), model_dir]) as staging:
        cine = read_cine(Path(args.path), series_uid=args.series)
        check_short_axis_cine(cine)
        transform = localise(cine, **manifest.preprocessing)
        preprocessing_figure(cine, transform, staging / "preprocessing.png")
        write_json_atomic(staging / "crop_transform.json", transform.to_dict(), indent=2)
    print(f"Wrote {out / 'preprocessing.png'} and {out / 'crop_transform.json'}")
    return 0


def _check_segment_args(args: argparse.Namespace) -> Path:
    """Refuse bad ``segment`` arguments before any work; returns the model folder (checked)."""
    from ..model.bundle import verify_bundle
    from ..model.onnx_runtime import execution_providers
    from ..model.rotations import check_rotations
    from ..resources import bundled_model_dir

    if not 0.0 < args.threshold < 1.0:
        raise InputError(f"--threshold {args.threshold} must lie strictly between 0 and 1 (default 0.5).")
    execution_providers(args.device)  # a device this ONNX Runtime lacks is refused now
    model_dir = Path(args.model) if args.model else bundled_model_dir()
    manifest = verify_bundle(model_dir)
    if args.members is not None and not 1 <= args.members <= len(manifest.members):
        raise InputError(f"--members {args.members}: the model {model_dir} has {len(manifest.members)} "
                         f"member(s); give a number from 1 to {len(manifest.members)}, or leave it out to use all.")
    if args.rotations is not None:
        check_rotations(args.rotations)
    return model_dir


def cmd_segment(args: argparse.Namespace) -> int:
    from ..analysis.wall_thickness import rv_insertion_pixel
    from ..files import output_folder
    from ..io.readers import read_cine
    from ..segmentation.outputs import write_segmentation_outputs

    model_dir = _check_segment_args(args)
    input_path = Path(args.path)
    out = Path(args.output)
    with output_folder(out, overwrite=args.overwrite, written_by="lvmyoseg segment",
                       protect=[input_path, model_dir]) as staging:
        t0 = time.perf_counter()
        cine = read_cine(input_path, series_uid=args.series)
        read_s = time.perf_counter() - t0
        if args.rv_insertion is not None:  # refused now, not after the network ran
            rv_insertion_pixel(args.rv_insertion, cine.geometry, cine.frames.shape[2:])

        from ..segmentation.pipeline import segment_cine

        progress = progress_printer(args.progress_lines)
        result = segment_cine(cine, model_dir, members=args.members, threshold=args.threshold,
                              progress=progress, device=args.device, rotations=args.rotations)
        written, withheld = write_segmentation_outputs(staging, cine, result, model_dir=model_dir,
                                                       file_format=_output_format(input_path, args.format),
                                                       read_seconds=read_s, overlay=not args.no_overlay,
                                                       rv_insertion_lps=args.rv_insertion)
    for name in written:
        print(f"wrote {out / name}")
    if not result.trust.get("verified", False):
        print(f"lvmyoseg: note: the model {model_dir} is unverified: {result.trust.get('note', '')}.",
              file=sys.stderr)
    if withheld:
        print(f"lvmyoseg: cardiac function withheld: {withheld}", file=sys.stderr)
        return EXIT_FUNCTION_WITHHELD
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from ..resources import bundled_model_dir
    from ..segmentation.batch import run_batch

    progress = progress_printer(args.progress_lines)

    def say(message: str) -> None:
        if args.progress_lines:
            print(message, flush=True)
        else:  # above the progress bar
            print(f"\r{message:<90}", file=sys.stderr, flush=True)

    try:
        summary = run_batch(Path(args.inputs), Path(args.output),
                            Path(args.model) if args.model else bundled_model_dir(), members=args.members,
                            rotations=args.rotations, workers=args.workers, scheduler=args.scheduler,
                            progress=progress, say=say)
    except CancelledError as exc:
        print(f"\nlvmyoseg: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\nlvmyoseg: stopped before any study was segmented.", file=sys.stderr)
        return 130
    print(f"{summary.ok} ok, {summary.refused} refused, {summary.failed} failed of {summary.total} studies "
          f"({summary.kept} kept from the earlier run) in {summary.seconds:.0f} s; table: "
          f"{Path(args.output) / 'cohort.csv'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..model.bundle import BUNDLE_MANIFEST
    from ..resources import bundled_model_dir, sample_case_dir

    cine_path = sample_case_dir() / "cine.nrrd"
    out = Path(args.output)
    if not (bundled_model_dir() / BUNDLE_MANIFEST).is_file():
        raise ModelError(f"The bundled model is missing from {bundled_model_dir()}; restore that folder "
                         "from the LVMyoSeg repository or extension package.")
    ns = argparse.Namespace(path=cine_path, series=None, output=out, model=None, members=None,
                            threshold=0.5, progress_lines=False, format="nrrd", no_overlay=False,
                            rv_insertion=None, overwrite=args.overwrite, device="auto", rotations=None)
    code = cmd_segment(ns)
    print(f"Demo outputs are in {out.resolve()}")
    return code


def _add_overwrite_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace the whole output folder even when it holds files LVMyoSeg did not write "
                        "(an earlier, untouched LVMyoSeg result is replaced without it)")


def _add_rotations_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rotations", type=int,
                   help="views averaged: 1, 2 or 4 quarter-turned copies of the study (default: the model's "
                        "own, inference.rotations in its manifest; 4 is more accurate and 4x the network time)")


def _add_study_arguments(p: argparse.ArgumentParser) -> None:
    """The study to read and the output folder (``preprocess`` and ``segment``)."""
    p.add_argument("path", help="DICOM folder, 4D NIfTI/NRRD file, or folder of 3D frames")
    p.add_argument("-o", "--output", required=True, help="output folder")
    _add_overwrite_option(p)
    p.add_argument("--series", help="SeriesInstanceUID when a DICOM folder holds several series")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from ..model.onnx_runtime import DEVICES

    p = sub.add_parser("inspect", help="print what a cine holds (T, Z, shape, spacing, trigger times)")
    p.add_argument("path", help="DICOM folder, 4D NIfTI/NRRD file, or folder of 3D frames")
    p.add_argument("--series", help="SeriesInstanceUID when a DICOM folder holds several series")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("preprocess", help="localise the LV and write the preprocessing picture")
    _add_study_arguments(p)
    p.add_argument("--model", help="model bundle whose network grid to crop to, as `segment` does "
                                   "(default: the bundled model)")
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser("segment", help="segment every frame of a cine")
    _add_study_arguments(p)
    p.add_argument("--model", help="model bundle folder (default: the bundled model)")
    p.add_argument("--members", type=int, help="ensemble members to use (default: all)")
    p.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default 0.5)")
    _add_rotations_option(p)
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="ONNX Runtime execution provider (default auto: CUDA or DirectML when present, "
                        "else the CPU); report.json names the one used")
    p.add_argument("--format", choices=("nifti", "nrrd"),
                   help="output format (default: that of the input; NIfTI for DICOM input)")
    p.add_argument("--no-overlay", action="store_true", help="skip the overlay PNG montage")
    p.add_argument("--rv-insertion", type=float, nargs=3, metavar=("X", "Y", "Z"),
                   help="anterior RV insertion point in patient LPS mm (DICOM coordinates; Slicer shows "
                        "RAS: negate X and Y): wall-thickness sectors become AHA segments")
    add_progress_option(p)
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("batch", help="segment a cohort: every study of a folder or CSV, resumable, "
                                     "into one table (cohort.csv)")
    p.add_argument("inputs", help="folder of studies (DICOM folders or 4D volume files) or a CSV with a "
                                  "`path` column and optional `id` and `rv_insertion` ('X Y Z', LPS mm)")
    p.add_argument("-o", "--output", required=True,
                   help="output folder: OUT/<study id>/ as `segment` writes it, OUT/cohort.csv and cohort.json")
    p.add_argument("--model", help="model bundle folder (default: the bundled model)")
    p.add_argument("--members", type=int, help="ensemble members to use (default: all)")
    _add_rotations_option(p)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=1,
                       help="local Dask worker processes (default 1, which uses all cores)")
    where.add_argument("--scheduler", help="address of an existing Dask scheduler (tcp://HOST:PORT) whose "
                                           "workers have LVMyoSeg and see the same paths")
    add_progress_option(p)
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("demo", help="segment the bundled sample study")
    p.add_argument("-o", "--output", default="output/demo")
    _add_overwrite_option(p)
    p.set_defaults(func=cmd_demo)
