"""The ``lvmyoseg`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from . import __version__
from .cli_process import progress_line
from .errors import CancelledError, LVMyoSegError, ModelError


class _Progress:
    """Progress reporting: a text bar on a terminal, or ``PROGRESS <fraction> <message>`` lines."""

    def __init__(self, lines: bool) -> None:
        self.lines = lines

    def __call__(self, fraction: float, message: str) -> None:
        if self.lines:
            print(progress_line(fraction, message), flush=True)
        else:
            bar = "#" * int(30 * fraction)
            print(f"\r[{bar:<30}] {100 * fraction:5.1f}% {message:<50}", end="", file=sys.stderr, flush=True)
            if fraction >= 1.0:
                print(file=sys.stderr)


def _output_format(input_path: Path, requested: str | None) -> str:
    from .segment_outputs import default_format

    return requested or default_format(input_path)


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
    from .files import staged_output
    from .readers import read_cine

    cine = read_cine(Path(args.path), series_uid=args.series)
    transform = preprocess.localise(cine)
    out = Path(args.output)
    with staged_output(out) as staging:
        preprocessing_figure(cine, transform, staging / "preprocessing.png")
        (staging / "crop_transform.json").write_text(json.dumps(transform.to_dict(), indent=2))
    print(f"Wrote {out / 'preprocessing.png'} and {out / 'crop_transform.json'}")
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    from .cardiac_function import rv_insertion_pixel
    from .readers import read_cine
    from .resources import bundled_model_dir
    from .segment_outputs import write_segmentation_outputs

    t0 = time.perf_counter()
    input_path = Path(args.path)
    cine = read_cine(input_path, series_uid=args.series)
    read_s = time.perf_counter() - t0
    if args.rv_insertion is not None:  # refused now, not after the network ran
        rv_insertion_pixel(args.rv_insertion, cine.geometry, cine.frames.shape[2:])
    model_dir = Path(args.model) if args.model else bundled_model_dir()

    from .pipeline import segment_cine

    progress = _Progress(args.progress_lines)
    result = segment_cine(cine, model_dir, members=args.members, threshold=args.threshold,
                          progress=progress)
    out = Path(args.output)
    written = write_segmentation_outputs(out, cine, result, model_dir=model_dir,
                                         file_format=_output_format(input_path, args.format),
                                         read_seconds=read_s, overlay=not args.no_overlay,
                                         rv_insertion_lps=args.rv_insertion)
    for path in written:
        print(f"wrote {path}")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from .batch import run_batch
    from .resources import bundled_model_dir

    progress = _Progress(args.progress_lines)

    def say(message: str) -> None:
        if args.progress_lines:
            print(message, flush=True)
        else:  # above the progress bar
            print(f"\r{message:<90}", file=sys.stderr, flush=True)

    try:
        summary = run_batch(Path(args.inputs), Path(args.output),
                            Path(args.model) if args.model else bundled_model_dir(), members=args.members,
                            workers=args.workers, scheduler=args.scheduler, progress=progress, say=say)
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
    from .resources import bundled_model_dir, sample_case_dir

    cine_path = sample_case_dir() / "cine.nrrd"
    out = Path(args.output)
    if not (bundled_model_dir() / "manifest.json").is_file():
        raise ModelError(f"The bundled model is missing from {bundled_model_dir()}; restore that folder "
                         "from the LVMyoSeg repository or extension package.")
    ns = argparse.Namespace(path=cine_path, series=None, output=out, model=None, members=None,
                            threshold=0.5, progress_lines=False, format="nrrd", no_overlay=False,
                            rv_insertion=None)
    code = cmd_segment(ns)
    print(f"Demo outputs are in {out.resolve()}")
    return code


def _training_progress(lines: bool):
    """Progress printer for training: a bar on a terminal, or PROGRESS lines."""

    def show(info: dict) -> None:
        fold = f"fold {info['fold'] + 1}/{info['folds']} ({info['case']}) " if "fold" in info else ""
        member = f"member {info['member'] + 1}/{info['members']} " if "member" in info else ""
        stage = info.get("variant", info.get("stage", ""))
        val = info.get("val_dsc")
        msg = (f"{fold}{member}{stage} epoch {info['epoch']}/{info['epochs']} loss {info['loss']:.4f}"
               + (f" val DSC {val:.3f}" if val is not None else "") + f" ETA {info['eta_s'] / 60:.1f} min")
        if lines:
            if info.get("event") == "epoch":
                print(progress_line(info["epoch"] / info["epochs"], msg), flush=True)
        elif info.get("event") == "epoch":
            print(msg, file=sys.stderr, flush=True)

    return show


def _experiment_config(args: argparse.Namespace):
    from .experiments import ExperimentConfig
    from .training import TrainConfig

    variants = tuple(v.strip() for v in args.variants.split(",")) if args.variants else None
    cnn = TrainConfig(epochs=args.cnn_epochs, seed=args.seed, width=args.width,
                      learning_rate=args.learning_rate, jit_compile=args.jit)
    rnn = TrainConfig(epochs=args.rnn_epochs, seed=args.seed, width=args.width,
                      learning_rate=args.learning_rate, augment=args.rnn_augment)
    kwargs = {"members": args.members, "cnn": cnn, "rnn": rnn,
              "preprocessing": {"pixel_mm": args.pixel_mm, "crop_size": args.crop_size}}
    if variants:
        kwargs["variants"] = variants
    return ExperimentConfig(**kwargs)


def _registry_dir(args: argparse.Namespace) -> Path:
    from .registry import default_registry_dir

    return Path(args.registry) if getattr(args, "registry", None) else default_registry_dir()


def _init_bundle(value: str | None, registry_dir: Path | None = None) -> Path | None:
    from .registry import resolve

    if value in (None, "scratch"):
        return None
    return resolve(value, registry_dir)


def cmd_loo(args: argparse.Namespace) -> int:
    from .experiments import run_loo

    t0 = time.perf_counter()
    results = run_loo(Path(args.dataset), Path(args.output), _experiment_config(args),
                      init_bundle=_init_bundle(args.init, _registry_dir(args)),
                      cases=args.cases.split(",") if args.cases else None,
                      progress=_training_progress(args.progress_lines))
    print((Path(args.output) / "loo_table.md").read_text())
    print(f"{results['folds_done']}/{results['folds_total']} folds done; this run took "
          f"{time.perf_counter() - t0:.0f} s. Results: {Path(args.output) / 'loo_results.json'}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import json as _json

    from .experiments import train_final
    from .registry import new_model_dir

    metrics = _json.loads(Path(args.loo_results).read_text())["overall"] if args.loo_results else None
    registry_dir = _registry_dir(args)
    if args.register:  # the new version is written straight into the registry
        model_id = args.model_id or f"{Path(args.dataset).resolve().name}-{time.strftime('%Y%m%d-%H%M%S')}"
        output = new_model_dir(registry_dir, model_id)
    else:
        output = Path(args.output)
        model_id = args.model_id or output.name
    out = train_final(Path(args.dataset), output, Path(args.run_dir), _experiment_config(args),
                      variant=args.variant, model_id=model_id,
                      init_bundle=_init_bundle(args.init, registry_dir), metrics=metrics,
                      cases=args.cases.split(",") if args.cases else None,
                      progress=_training_progress(args.progress_lines))
    print(f"wrote model bundle {out}" + (f"; registered as {model_id} in {registry_dir}" if args.register else ""))
    return 0


def cmd_dataset_sunnybrook(args: argparse.Namespace) -> int:
    from .sunnybrook import sunnybrook_to_dataset

    for case_dir in sunnybrook_to_dataset(Path(args.root) if args.root else None, Path(args.output)):
        print(f"added {case_dir}")
    return 0


def cmd_validate_function(args: argparse.Namespace) -> int:
    from .function_validation import validate_loo_run

    validate_loo_run(Path(args.run), Path(args.dataset), Path(args.output), variant=args.variant)
    print((Path(args.output) / "function_validation.md").read_text())
    return 0


def _add_training_options(p: argparse.ArgumentParser, default_members: int) -> None:
    p.add_argument("--init", default="scratch",
                   help="start from: 'scratch' (default), 'bundled', a registered model id or a model "
                        "bundle folder (fine-tuning)")
    p.add_argument("--registry", help="model-version registry folder (default: $LVMYOSEG_REGISTRY or "
                                      "~/.lvmyoseg/models)")
    p.add_argument("--variants", help="comma-separated: cnn,one_level,multi_level (default: all three)")
    p.add_argument("--members", type=int, default=default_members, help="ensemble members")
    p.add_argument("--cnn-epochs", type=int, default=60, help="stage 1 epochs")
    p.add_argument("--rnn-epochs", type=int, default=20, help="stage 2 epochs")
    p.add_argument("--learning-rate", type=float, help="Adam learning rate (default 1e-3, 1e-4 fine-tuning)")
    p.add_argument("--width", type=int, default=16, help="ResNet-56 base width (paper: 16)")
    p.add_argument("--pixel-mm", type=float, default=4 / 3,
                   help="in-plane pixel size of the network (mm; default 4/3, the acquisitions' own)")
    p.add_argument("--crop-size", type=int, default=96, help="crop box side in pixels (default 96: 128 mm)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jit", action="store_true", help="XLA-compile the stage 1 training step")
    p.add_argument("--rnn-augment", action="store_true",
                   help="augment stage 2 too (slower: the frozen CNN then runs in every step "
                        "instead of once on cached features)")
    p.add_argument("--progress-lines", action="store_true",
                   help="print 'PROGRESS <fraction> <message>' lines (for the Slicer module)")


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
    p.add_argument("--rv-insertion", type=float, nargs=3, metavar=("X", "Y", "Z"),
                   help="anterior RV insertion point in patient LPS mm (DICOM coordinates; Slicer shows "
                        "RAS: negate X and Y): wall-thickness sectors become AHA segments")
    p.add_argument("--progress-lines", action="store_true",
                   help="print 'PROGRESS <fraction> <message>' lines (for the Slicer module)")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("batch", help="segment a cohort: every study of a folder or CSV, resumable, "
                                     "into one table (cohort.csv)")
    p.add_argument("inputs", help="folder of studies (DICOM folders or 4D volume files) or a CSV with a "
                                  "`path` column and optional `id` and `rv_insertion` ('X Y Z', LPS mm)")
    p.add_argument("-o", "--output", required=True,
                   help="output folder: OUT/<study id>/ as `segment` writes it, OUT/cohort.csv and cohort.json")
    p.add_argument("--model", help="model bundle folder (default: the bundled model)")
    p.add_argument("--members", type=int, help="ensemble members to use (default: all)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=1,
                       help="local Dask worker processes (default 1, which uses all cores)")
    where.add_argument("--scheduler", help="address of an existing Dask scheduler (tcp://HOST:PORT) whose "
                                           "workers have LVMyoSeg and see the same paths")
    p.add_argument("--progress-lines", action="store_true",
                   help="print 'PROGRESS <fraction> <message>' lines (for the Slicer module)")
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("demo", help="segment the bundled sample study")
    p.add_argument("-o", "--output", default="output/demo")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("loo", help="leave-one-case-out training and evaluation on a dataset")
    p.add_argument("dataset", help="LVMyoSeg training dataset folder")
    p.add_argument("-o", "--output", required=True, help="run folder (resumes when it exists)")
    p.add_argument("--cases", help="comma-separated subset of case ids")
    _add_training_options(p, default_members=1)
    p.set_defaults(func=cmd_loo)

    p = sub.add_parser("train", help="train on every case of a dataset and write a model bundle")
    p.add_argument("dataset")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--output", help="new model bundle folder (never overwritten)")
    where.add_argument("--register", action="store_true",
                       help="write the bundle into the registry (--registry) as --model-id "
                            "(default: <dataset name>-<date-time>)")
    p.add_argument("--run-dir", required=True, help="checkpoint folder (resumes when it exists)")
    p.add_argument("--cases", help="comma-separated subset of case ids (default: all)")
    p.add_argument("--variant", default="multi_level", choices=("cnn", "one_level", "multi_level"))
    p.add_argument("--model-id", help="model id for the manifest (default: the output folder name)")
    p.add_argument("--loo-results", help="loo_results.json whose metrics go into the manifest")
    _add_training_options(p, default_members=5)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("validate-function",
                       help="EDV/ESV/EF of a LOO run's held-out segmentations vs the expert labels")
    p.add_argument("run", help="folder of a finished `lvmyoseg loo` run")
    p.add_argument("dataset", help="the dataset the run used")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--variant", default="multi_level", choices=("cnn", "one_level", "multi_level"))
    p.set_defaults(func=cmd_validate_function)

    p = sub.add_parser("sunnybrook-dataset", help="convert the Sunnybrook studies into a training dataset")
    p.add_argument("-o", "--output", required=True, help="dataset folder")
    p.add_argument("--root", help="Sunnybrook folder (default: $LVMYOSEG_SUNNYBROOK or ../shared/data/sunnybrook)")
    p.set_defaults(func=cmd_dataset_sunnybrook)
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
