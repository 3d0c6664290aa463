"""The ``lvmyoseg`` command line."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from . import __version__
from .errors import LVMyoSegError


class _Progress:
    """Progress reporting: a text bar on a terminal, or ``PROGRESS <fraction> <message>`` lines."""

    def __init__(self, lines: bool) -> None:
        self.lines = lines

    def __call__(self, fraction: float, message: str) -> None:
        if self.lines:
            print(f"PROGRESS {fraction:.4f} {message}", flush=True)
        else:
            bar = "#" * int(30 * fraction)
            print(f"\r[{bar:<30}] {100 * fraction:5.1f}% {message:<50}", end="", file=sys.stderr, flush=True)
            if fraction >= 1.0:
                print(file=sys.stderr)


def _output_format(input_path: Path, requested: str | None) -> str:
    if requested:
        return requested
    name = input_path.name.lower()
    if name.endswith((".nrrd", ".nhdr")):
        return "nrrd"
    return "nifti"


def _staged_output(out: Path) -> Path:
    """A temporary folder beside ``out``; moved into place only when everything was written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial.", dir=out.parent))


def _commit_output(staging: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for item in staging.iterdir():
        os.replace(item, out / item.name)
    shutil.rmtree(staging, ignore_errors=True)


def cmd_inspect(args: argparse.Namespace) -> int:
    from .readers import read_cine

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
    from . import preprocess
    from .figures import preprocessing_figure
    from .readers import read_cine

    cine = read_cine(Path(args.path), series_uid=args.series)
    transform = preprocess.localise(cine)
    out = Path(args.output)
    staging = _staged_output(out)
    try:
        preprocessing_figure(cine, transform, staging / "preprocessing.png")
        (staging / "crop_transform.json").write_text(json.dumps(transform.to_dict(), indent=2))
        _commit_output(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"Wrote {out / 'preprocessing.png'} and {out / 'crop_transform.json'}")
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    from .readers import read_cine
    from .resources import bundled_model_dir
    from .segment_outputs import write_segmentation_outputs

    t0 = time.perf_counter()
    input_path = Path(args.path)
    cine = read_cine(input_path, series_uid=args.series)
    read_s = time.perf_counter() - t0
    model_dir = Path(args.model) if args.model else bundled_model_dir()

    from .pipeline import segment_cine

    progress = _Progress(args.progress_lines)
    result = segment_cine(cine, model_dir, members=args.members, threshold=args.threshold,
                          progress=progress)
    out = Path(args.output)
    written = write_segmentation_outputs(out, cine, result, model_dir=model_dir,
                                         file_format=_output_format(input_path, args.format),
                                         read_seconds=read_s, overlay=not args.no_overlay)
    for path in written:
        print(f"wrote {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .resources import bundled_model_dir, sample_case_dir

    cine_path = sample_case_dir() / "cine.nrrd"
    out = Path(args.output)
    if not (bundled_model_dir() / "manifest.json").is_file():
        print(f"No bundled model yet at {bundled_model_dir()}; inspecting and preprocessing the sample.")
        cmd_inspect(argparse.Namespace(path=cine_path, series=None, json=False))
        return cmd_preprocess(argparse.Namespace(path=cine_path, series=None, output=out))
    ns = argparse.Namespace(path=cine_path, series=None, output=out, model=None, members=None,
                            threshold=0.5, progress_lines=False, format="nrrd", no_overlay=False)
    code = cmd_segment(ns)
    print(f"Demo outputs are in {out.resolve()}")
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lvmyoseg", description=(
        "LV myocardium segmentation of short-axis cine MRI (CNN + multi-level ConvLSTM ensemble)."))
    parser.add_argument("--version", action="version", version=f"lvmyoseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="print what a cine holds (T, Z, shape, spacing, trigger times)")
    p.add_argument("path", help="DICOM folder, 4D NIfTI/NRRD file, or folder of 3D frames")
    p.add_argument("--series", help="SeriesInstanceUID when a DICOM folder holds several series")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("preprocess", help="localise the LV and write the preprocessing picture")
    p.add_argument("path")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--series")
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser("segment", help="segment every frame of a cine")
    p.add_argument("path")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--series")
    p.add_argument("--model", help="model bundle folder (default: the bundled model)")
    p.add_argument("--members", type=int, help="ensemble members to use (default: all)")
    p.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default 0.5)")
    p.add_argument("--format", choices=("nifti", "nrrd"),
                   help="output format (default: that of the input; NIfTI for DICOM input)")
    p.add_argument("--no-overlay", action="store_true", help="skip the overlay PNG montage")
    p.add_argument("--progress-lines", action="store_true",
                   help="print 'PROGRESS <fraction> <message>' lines (for the Slicer module)")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("demo", help="segment the bundled sample study")
    p.add_argument("-o", "--output", default="output/demo")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LVMyoSegError as exc:
        print(f"lvmyoseg: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
