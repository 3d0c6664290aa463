"""The ``lvmyoseg`` command line.

Exit codes: 0 done; 2 an error (message on stderr, nothing half-written);
3 (``segment``, ``demo``) the segmentation was written but the cardiac function values
were withheld as meaningless (reason on stderr and in report.json ``function_withheld``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from .. import __version__
from ..errors import EXIT_FUNCTION_WITHHELD, CancelledError, InputError, LVMyoSegError, ModelError
from ..model.variants import VARIANTS
from ..progress import progress_line

EXIT_ERROR = 2


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
    from ..files import output_folder
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
        (staging / "crop_transform.json").write_text(json.dumps(transform.to_dict(), indent=2))
    print(f"Wrote {out / 'preprocessing.png'} and {out / 'crop_transform.json'}")
    return 0


def _check_segment_args(args: argparse.Namespace) -> Path:
    """Refuse bad ``segment`` arguments before any work; returns the model folder (checked)."""
    from ..model.bundle import verify_bundle
    from ..model.onnx_runtime import execution_providers
    from ..resources import bundled_model_dir

    if not 0.0 < args.threshold < 1.0:
        raise InputError(f"--threshold {args.threshold} must lie strictly between 0 and 1 (default 0.5).")
    execution_providers(args.device)  # a device this ONNX Runtime lacks is refused now
    model_dir = Path(args.model) if args.model else bundled_model_dir()
    manifest = verify_bundle(model_dir)
    if args.members is not None and not 1 <= args.members <= len(manifest.members):
        raise InputError(f"--members {args.members}: the model {model_dir} has {len(manifest.members)} "
                         f"member(s); give a number from 1 to {len(manifest.members)}, or leave it out to use all.")
    return model_dir


def cmd_segment(args: argparse.Namespace) -> int:
    from ..analysis.cardiac_function import rv_insertion_pixel
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

        progress = _Progress(args.progress_lines)
        result = segment_cine(cine, model_dir, members=args.members, threshold=args.threshold,
                              progress=progress, device=args.device)
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
    from ..model.bundle import BUNDLE_MANIFEST
    from ..resources import bundled_model_dir, sample_case_dir

    cine_path = sample_case_dir() / "cine.nrrd"
    out = Path(args.output)
    if not (bundled_model_dir() / BUNDLE_MANIFEST).is_file():
        raise ModelError(f"The bundled model is missing from {bundled_model_dir()}; restore that folder "
                         "from the LVMyoSeg repository or extension package.")
    ns = argparse.Namespace(path=cine_path, series=None, output=out, model=None, members=None,
                            threshold=0.5, progress_lines=False, format="nrrd", no_overlay=False,
                            rv_insertion=None, overwrite=args.overwrite, device="auto")
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


def _check_training_args(args: argparse.Namespace, variants: tuple[str, ...]) -> None:
    """Refuse bad ``loo``/``train``/``cv`` arguments before any training starts (fills in the
    default network grid where --pixel-mm or --crop-size is not given)."""
    from ..preprocessing.localisation import preprocessing_problem
    from ..preprocessing.preprocess import DEFAULT_PREPROCESSING

    args.pixel_mm = DEFAULT_PREPROCESSING["pixel_mm"] if args.pixel_mm is None else args.pixel_mm
    args.crop_size = DEFAULT_PREPROCESSING["crop_size"] if args.crop_size is None else args.crop_size

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise InputError(f"--variants {args.variants!r}: unknown variant(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(VARIANTS)}.")
    if args.members < 1:
        raise InputError(f"--members {args.members}: an ensemble needs at least 1 member (paper: 5).")
    for name in ("cnn_epochs", "rnn_epochs"):
        if getattr(args, name) < 0:
            raise InputError(f"--{name.replace('_', '-')} {getattr(args, name)} is negative; give 0 or more epochs.")
    rnn_needed = any(v != "cnn" for v in variants)
    if args.init in (None, "scratch"):
        if args.cnn_epochs < 1 or (rnn_needed and args.rnn_epochs < 1):
            raise InputError(f"--cnn-epochs {args.cnn_epochs} --rnn-epochs {args.rnn_epochs}: training from "
                             "scratch needs at least 1 epoch of each stage it trains, or the model stays "
                             "untrained. Give more epochs, or --init a model to fine-tune.")
    elif args.cnn_epochs + (args.rnn_epochs if rnn_needed else 0) < 1:
        raise InputError("--cnn-epochs 0 --rnn-epochs 0: fine-tuning with no epochs would copy the starting "
                         "model unchanged. Give at least 1 epoch.")
    if args.width < 1:
        raise InputError(f"--width {args.width} must be at least 1 (paper: 16).")
    if args.learning_rate is not None and not 0.0 < args.learning_rate < 1.0:
        raise InputError(f"--learning-rate {args.learning_rate} must lie between 0 and 1 (default 1e-3).")
    problem = preprocessing_problem({"pixel_mm": args.pixel_mm, "crop_size": args.crop_size})
    if problem:
        raise InputError(f"--pixel-mm {args.pixel_mm} --crop-size {args.crop_size}: the preprocessing {problem}.")
    if args.crop_size % 4:
        raise InputError(f"--crop-size {args.crop_size} must be a multiple of 4 (the network halves it twice).")
    dataset = getattr(args, "dataset", None) or getattr(args, "cines", None)  # `cv`: optional cines
    if dataset is None:
        return
    dataset = Path(dataset)
    if not dataset.is_dir():
        raise InputError(f"The dataset folder {dataset} does not exist; make one with "
                         "`lvmyoseg sunnybrook-dataset` or the LV Myocardium Trainer module.")


def _check_new_folder(path: Path, what: str, may_exist: bool) -> None:
    """Refuse a folder path that is a file, lies under a file, or (unless ``may_exist``) exists."""
    from ..files import resolve_output

    resolve_output(path)
    if not may_exist and (path.exists() or path.is_symlink()):
        raise InputError(f"{what} {path} already exists; it is never overwritten. Give a new folder name.")


def _experiment_config(args: argparse.Namespace):
    from ..training.experiments import ExperimentConfig
    from ..training.loop import TrainConfig

    variants = tuple(v.strip() for v in args.variants.split(",")) if args.variants else None
    trained = (args.variant,) if hasattr(args, "variant") else VARIANTS  # train: one variant; loo: all
    _check_training_args(args, variants if variants is not None else trained)
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
    from ..model.registry import default_registry_dir

    return Path(args.registry) if getattr(args, "registry", None) else default_registry_dir()


def _init_bundle(value: str | None, registry_dir: Path | None = None) -> Path | None:
    from ..model.registry import resolve

    if value in (None, "scratch"):
        return None
    return resolve(value, registry_dir)


def cmd_loo(args: argparse.Namespace) -> int:
    from ..training.experiments import run_loo

    t0 = time.perf_counter()
    config = _experiment_config(args)
    _check_new_folder(Path(args.output), "The run folder", may_exist=True)
    results = run_loo(Path(args.dataset), Path(args.output), config,
                      init_bundle=_init_bundle(args.init, _registry_dir(args)),
                      cases=args.cases.split(",") if args.cases else None,
                      stage_one=Path(args.stage_one) if args.stage_one else None,
                      progress=_training_progress(args.progress_lines))
    print((Path(args.output) / "loo_table.md").read_text())
    print(f"{results['folds_done']}/{results['folds_total']} folds done; this run took "
          f"{time.perf_counter() - t0:.0f} s. Results: {Path(args.output) / 'loo_results.json'}")
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    from ..training.cross_validation import run_cv

    t0 = time.perf_counter()
    results = run_cv(Path(args.edes), Path(args.output), _experiment_config(args),
                     cine_dataset=Path(args.cines) if args.cines else None, n_folds=args.folds,
                     folds_to_run=args.fold, progress=_training_progress(args.progress_lines))
    print((Path(args.output) / "cv_table.md").read_text())
    print(f"{results['folds_done']}/{results['folds_total']} folds done; this run took "
          f"{time.perf_counter() - t0:.0f} s. Results: {Path(args.output) / 'cv_results.json'}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import json as _json

    from ..model.registry import new_model_dir
    from ..model.trust import pin
    from ..training.experiments import train_final

    config = _experiment_config(args)
    metrics = None
    if args.loo_results:
        try:
            metrics = _json.loads(Path(args.loo_results).read_text(encoding="utf-8"))["overall"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"--loo-results {args.loo_results} is not a loo_results.json of `lvmyoseg loo` "
                             f"({type(exc).__name__}: {exc}). Give that file, or leave the option out.") from None
    registry_dir = _registry_dir(args)
    if args.register:  # the new version is written straight into the registry
        model_id = args.model_id or f"{Path(args.dataset).resolve().name}-{time.strftime('%Y%m%d-%H%M%S')}"
        output = new_model_dir(registry_dir, model_id)
    else:
        output = Path(args.output)
        model_id = args.model_id or output.name
        _check_new_folder(output, "The model bundle folder", may_exist=False)
    _check_new_folder(Path(args.run_dir), "The run folder", may_exist=True)
    out = train_final(Path(args.dataset), output, Path(args.run_dir), config,
                      variant=args.variant, model_id=model_id,
                      init_bundle=_init_bundle(args.init, registry_dir), metrics=metrics,
                      cases=args.cases.split(",") if args.cases else None,
                      edes_root=Path(args.edes) if args.edes else None,
                      progress=_training_progress(args.progress_lines))
    if args.register:
        pin(registry_dir, model_id, out)
    print(f"wrote model bundle {out}" + (f"; registered as {model_id} in {registry_dir}" if args.register else ""))
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from ..model.bundle import add_onnx_members

    add_onnx_members(Path(args.bundle), Path(args.output))
    print(f"wrote model bundle {args.output} (the Keras members of {args.bundle} and their ONNX members)")
    return 0


def cmd_dataset_sunnybrook(args: argparse.Namespace) -> int:
    from ..io.sunnybrook import sunnybrook_to_dataset

    added = sunnybrook_to_dataset(Path(args.root) if args.root else None, Path(args.output))
    for case_dir in added:
        print(f"added {case_dir}")
    print(f"{len(added)} case(s) added; cases already in {args.output} were kept as they were.")
    return 0


def cmd_validate_function(args: argparse.Namespace) -> int:
    from ..training.function_validation import validate_loo_run

    validate_loo_run(Path(args.run), Path(args.dataset), Path(args.output), variant=args.variant)
    print((Path(args.output) / "function_validation.md").read_text())
    return 0


def _add_training_options(p: argparse.ArgumentParser, default_members: int) -> None:
    p.add_argument("--init", default="scratch",
                   help="start from: 'scratch' (default), 'bundled', a registered model id or a model "
                        "bundle folder (fine-tuning)")
    p.add_argument("--registry", help="model-version registry folder (default: $LVMYOSEG_REGISTRY or "
                                      "~/.lvmyoseg/models)")
    p.add_argument("--variants", help=f"comma-separated: {','.join(VARIANTS)} (default: all three)")
    p.add_argument("--members", type=int, default=default_members, help="ensemble members")
    p.add_argument("--cnn-epochs", type=int, default=60, help="stage 1 epochs")
    p.add_argument("--rnn-epochs", type=int, default=20, help="stage 2 epochs")
    p.add_argument("--learning-rate", type=float, help="Adam learning rate (default 1e-3, 1e-4 fine-tuning)")
    p.add_argument("--width", type=int, default=16, help="ResNet-56 base width (paper: 16)")
    p.add_argument("--pixel-mm", type=float,
                   help="in-plane pixel size of the network (mm; default 4/3, the acquisitions' own)")
    p.add_argument("--crop-size", type=int, help="crop box side in pixels (default 96: 128 mm)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jit", action="store_true", help="XLA-compile the stage 1 training step")
    p.add_argument("--rnn-augment", action="store_true",
                   help="augment stage 2 too (slower: the frozen CNN then runs in every step "
                        "instead of once on cached features)")
    p.add_argument("--progress-lines", action="store_true",
                   help="print 'PROGRESS <fraction> <message>' lines (for the Slicer module)")


def _add_overwrite_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace the whole output folder even when it holds files LVMyoSeg did not write "
                        "(an earlier, untouched LVMyoSeg result is replaced without it)")


def build_parser() -> argparse.ArgumentParser:
    from ..model.onnx_runtime import DEVICES

    parser = argparse.ArgumentParser(prog="lvmyoseg", description=(
        "LV myocardium segmentation of short-axis cine MRI (CNN + multi-level ConvLSTM ensemble)."),
        epilog="Exit codes: 0 done; 2 error; 3 segmentation written but the cardiac function "
               "withheld (reason on stderr and in report.json).")
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
    _add_overwrite_option(p)
    p.add_argument("--series")
    p.add_argument("--model", help="model bundle whose network grid to crop to, as `segment` does "
                                   "(default: the bundled model)")
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser("segment", help="segment every frame of a cine")
    p.add_argument("path")
    p.add_argument("-o", "--output", required=True, help="output folder")
    _add_overwrite_option(p)
    p.add_argument("--series")
    p.add_argument("--model", help="model bundle folder (default: the bundled model)")
    p.add_argument("--members", type=int, help="ensemble members to use (default: all)")
    p.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default 0.5)")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="ONNX Runtime execution provider (default auto: CUDA or DirectML when present, "
                        "else the CPU); report.json names the one used")
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
    _add_overwrite_option(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("loo", help="leave-one-case-out training and evaluation on a dataset")
    p.add_argument("dataset", help="LVMyoSeg training dataset folder")
    p.add_argument("-o", "--output", required=True, help="run folder (resumes when it exists)")
    p.add_argument("--cases", help="comma-separated subset of case ids")
    p.add_argument("--stage-one", help="a `lvmyoseg cv` run folder: each fold's CNN is the one of the "
                                       "cross-validation fold that held the same patient out")
    _add_training_options(p, default_members=1)
    p.set_defaults(func=cmd_loo)

    p = sub.add_parser("cv", help="patient-level cross-validation of the CNN over labelled ED/ES frames")
    p.add_argument("edes", help="folder of labelled ED/ES frames (frames.csv, images/, endocardium/, "
                                "epicardium/), e.g. ../shared/data/sunnybrook-edes")
    p.add_argument("-o", "--output", required=True, help="run folder (resumes when it exists)")
    p.add_argument("--cines", help="LVMyoSeg dataset of whole cines of some of the same patients (their "
                                   "cine frames replace their ED/ES frames in training)")
    p.add_argument("--folds", type=int, default=6, help="number of folds (default 6)")
    p.add_argument("--fold", type=int, action="append", help="run only this fold (0-based; repeatable)")
    _add_training_options(p, default_members=1)
    p.set_defaults(func=cmd_cv)

    p = sub.add_parser("train", help="train on every case of a dataset and write a model bundle")
    p.add_argument("dataset")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--output", help="new model bundle folder (never overwritten)")
    where.add_argument("--register", action="store_true",
                       help="write the bundle into the registry (--registry) as --model-id "
                            "(default: <dataset name>-<date-time>)")
    p.add_argument("--run-dir", required=True, help="checkpoint folder (resumes when it exists)")
    p.add_argument("--cases", help="comma-separated subset of case ids (default: all)")
    p.add_argument("--variant", default="multi_level", choices=VARIANTS)
    p.add_argument("--model-id", help="model id for the manifest (default: the output folder name)")
    p.add_argument("--loo-results", help="loo_results.json whose metrics go into the manifest")
    p.add_argument("--edes", help="folder of labelled ED/ES frames of more patients: stage 1 (the CNN) "
                                  "also trains on them")
    _add_training_options(p, default_members=5)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export-onnx", help="copy a model bundle written without ONNX members and add them "
                                           "(needs the training requirements)")
    p.add_argument("bundle", help="model bundle folder")
    p.add_argument("-o", "--output", required=True, help="new model bundle folder (never overwritten)")
    p.set_defaults(func=cmd_export_onnx)

    p = sub.add_parser("validate-function",
                       help="EDV/ESV/EF of a LOO run's held-out segmentations vs the expert labels")
    p.add_argument("run", help="folder of a finished `lvmyoseg loo` run")
    p.add_argument("dataset", help="the dataset the run used")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--variant", default="multi_level", choices=VARIANTS)
    p.set_defaults(func=cmd_validate_function)

    p = sub.add_parser("sunnybrook-dataset", help="convert the Sunnybrook studies into a training dataset")
    p.add_argument("-o", "--output", required=True, help="dataset folder")
    p.add_argument("--root", help="Sunnybrook folder (default: $LVMYOSEG_SUNNYBROOK or ../shared/data/sunnybrook)")
    p.set_defaults(func=cmd_dataset_sunnybrook)
    return parser


class _Terminated(BaseException):  # not an Exception: no `except Exception` may swallow it
    """SIGTERM arrived (a job scheduler or a parent process stopped this run)."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        return int(args.func(args) or 0)
    except _Terminated:  # unwinds like Ctrl-C, so staging folders are removed
        print("lvmyoseg: stopped (SIGTERM). The unfinished output folder was not written (outputs appear whole "
              "or not at all); a training run resumes from its last checkpoint when run again.", file=sys.stderr)
        return 143
    except LVMyoSegError as exc:
        print(f"lvmyoseg: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("\nlvmyoseg: interrupted. The unfinished output folder was not written (outputs appear whole or "
              "not at all); a training run resumes from its last checkpoint when run again.", file=sys.stderr)
        return 130
    except OSError as exc:  # a file-system failure no check foresaw: say which file, not a traceback
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"lvmyoseg: error: {exc.strerror or exc}{where}. Check that the path exists, that you may "
              "write there and that the disk has free space, then run the command again.", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
