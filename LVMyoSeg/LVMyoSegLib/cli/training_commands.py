"""The training and evaluation commands: ``loo``, ``cv``, ``train``, ``validate-function``,
``sunnybrook-dataset``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..errors import InputError
from ..model.variants import VARIANTS
from .model_commands import init_bundle, registry_dir
from .printing import add_progress_option, training_printer


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
    if not 0.0 <= args.augment_blur <= 3.0:
        raise InputError(f"--augment-blur {args.augment_blur} must lie between 0 (off, the default) and 3 pixels.")
    if not 0.0 <= args.boundary_weight <= 20.0:
        raise InputError(f"--boundary-weight {args.boundary_weight} must lie between 0 (off, the default) and 20.")
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
    from ..model.rotations import check_rotations
    from ..training.experiments import ExperimentConfig
    from ..training.loop import TrainConfig

    variants = tuple(v.strip() for v in args.variants.split(",")) if args.variants else None
    trained = (args.variant,) if hasattr(args, "variant") else VARIANTS  # train: one variant; loo: all
    _check_training_args(args, variants if variants is not None else trained)
    cnn = TrainConfig(epochs=args.cnn_epochs, seed=args.seed, width=args.width,
                      learning_rate=args.learning_rate, jit_compile=args.jit, augment_blur_px=args.augment_blur,
                      boundary_weight=args.boundary_weight)
    rnn = TrainConfig(epochs=args.rnn_epochs, seed=args.seed, width=args.width,
                      learning_rate=args.learning_rate, augment=args.rnn_augment, augment_blur_px=args.augment_blur,
                      boundary_weight=args.boundary_weight)
    kwargs = {"members": args.members, "cnn": cnn, "rnn": rnn, "rotations": check_rotations(args.rotations),
              "preprocessing": {"pixel_mm": args.pixel_mm, "crop_size": args.crop_size}}
    if variants:
        kwargs["variants"] = variants
    return ExperimentConfig(**kwargs)


def cmd_loo(args: argparse.Namespace) -> int:
    from ..training.experiments import run_loo

    t0 = time.perf_counter()
    config = _experiment_config(args)
    _check_new_folder(Path(args.output), "The run folder", may_exist=True)
    results = run_loo(Path(args.dataset), Path(args.output), config,
                      init_bundle=init_bundle(args.init, registry_dir(args)),
                      cases=args.cases.split(",") if args.cases else None,
                      stage_one=Path(args.stage_one) if args.stage_one else None,
                      progress=training_printer(args.progress_lines))
    print((Path(args.output) / "loo_table.md").read_text())
    print(f"{results['folds_done']}/{results['folds_total']} folds done; this run took "
          f"{time.perf_counter() - t0:.0f} s. Results: {Path(args.output) / 'loo_results.json'}")
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    from ..training.cross_validation import run_cv

    t0 = time.perf_counter()
    results = run_cv(Path(args.edes), Path(args.output), _experiment_config(args),
                     cine_dataset=Path(args.cines) if args.cines else None, n_folds=args.folds,
                     folds_to_run=args.fold, progress=training_printer(args.progress_lines))
    print((Path(args.output) / "cv_table.md").read_text())
    print(f"{results['folds_done']}/{results['folds_total']} folds done; this run took "
          f"{time.perf_counter() - t0:.0f} s. Results: {Path(args.output) / 'cv_results.json'}")
    return 0


def _manifest_metrics(loo_results: str | None, cv_results: str | None) -> dict | None:
    """The manifest's metrics: a LOO run's overall block, with a CV run's summary under ``cross_validation``."""
    def read(path: str, option: str, command: str, keys: tuple[str, ...]) -> dict:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return {k: data[k] for k in keys}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{option} {path} is not a results file of {command} ({type(exc).__name__}: "
                             f"{exc}). Give the file that command wrote, or leave the option out.") from None

    metrics = read(loo_results, "--loo-results", "`lvmyoseg loo`", ("overall",))["overall"] if loo_results else {}
    if cv_results:
        metrics["cross_validation"] = read(cv_results, "--cv-results", "`lvmyoseg cv`",
                                           ("overall", "by_group", "folds_done", "folds_total"))
    return metrics or None


def cmd_train(args: argparse.Namespace) -> int:
    from ..model.registry import new_model_dir
    from ..model.trust import pin
    from ..training.experiments import train_final

    config = _experiment_config(args)
    metrics = _manifest_metrics(args.loo_results, args.cv_results)
    registry = registry_dir(args)
    if args.register:  # the new version is written straight into the registry
        model_id = args.model_id or f"{Path(args.dataset).resolve().name}-{time.strftime('%Y%m%d-%H%M%S')}"
        output = new_model_dir(registry, model_id)
    else:
        output = Path(args.output)
        model_id = args.model_id or output.name
        _check_new_folder(output, "The model bundle folder", may_exist=False)
    _check_new_folder(Path(args.run_dir), "The run folder", may_exist=True)
    out = train_final(Path(args.dataset), output, Path(args.run_dir), config,
                      variant=args.variant, model_id=model_id,
                      init_bundle=init_bundle(args.init, registry), metrics=metrics,
                      cases=args.cases.split(",") if args.cases else None,
                      edes_root=Path(args.edes) if args.edes else None,
                      progress=training_printer(args.progress_lines))
    if args.register:
        pin(registry, model_id, out)
    print(f"wrote model bundle {out}" + (f"; registered as {model_id} in {registry}" if args.register else ""))
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


def add_training_options(p: argparse.ArgumentParser, default_members: int) -> None:
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
    p.add_argument("--rotations", type=int, default=4,
                   help="quarter-turned views averaged when scoring held-out patients, and the trained "
                        "bundle's inference setting: 1, 2 or 4 (default 4)")
    p.add_argument("--augment-blur", type=float, default=0.0,
                   help="resolution augmentation: Gaussian blur up to this sigma in network pixels "
                        "(default 0: off; 1.0 gave no gain on 2 CV folds, docs/RESULTS.md)")
    p.add_argument("--boundary-weight", type=float, default=0.0,
                   help="extra loss weight on pixels within one pixel of a contour: a boundary pixel "
                        "counts 1 + this (default 0: off; 2 gave no gain on 2 CV folds, docs/RESULTS.md)")
    p.add_argument("--jit", action="store_true", help="XLA-compile the stage 1 training step")
    p.add_argument("--rnn-augment", action="store_true",
                   help="augment stage 2 too (slower: the frozen CNN then runs in every step "
                        "instead of once on cached features)")
    add_progress_option(p)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("loo", help="leave-one-case-out training and evaluation on a dataset")
    p.add_argument("dataset", help="LVMyoSeg training dataset folder")
    p.add_argument("-o", "--output", required=True, help="run folder (resumes when it exists)")
    p.add_argument("--cases", help="comma-separated subset of case ids")
    p.add_argument("--stage-one", help="a `lvmyoseg cv` run folder: each fold's CNNs are those of the "
                                       "cross-validation fold that held the same patient out (as many "
                                       "members as that run trained per fold)")
    add_training_options(p, default_members=1)
    p.set_defaults(func=cmd_loo)

    p = sub.add_parser("cv", help="patient-level cross-validation of the CNN over labelled ED/ES frames")
    p.add_argument("edes", help="folder of labelled ED/ES frames (frames.csv, images/, endocardium/, "
                                "epicardium/), e.g. ../shared/data/sunnybrook-edes")
    p.add_argument("-o", "--output", required=True, help="run folder (resumes when it exists)")
    p.add_argument("--cines", help="LVMyoSeg dataset of whole cines of some of the same patients (their "
                                   "cine frames replace their ED/ES frames in training)")
    p.add_argument("--folds", type=int, default=6, help="number of folds (default 6)")
    p.add_argument("--fold", type=int, action="append", help="run only this fold (0-based; repeatable)")
    add_training_options(p, default_members=1)
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
    p.add_argument("--cv-results", help="cv_results.json of `lvmyoseg cv`: its summary goes into the manifest "
                                        "too (metrics.cross_validation)")
    p.add_argument("--edes", help="folder of labelled ED/ES frames of more patients: stage 1 (the CNN) "
                                  "also trains on them")
    add_training_options(p, default_members=5)
    p.set_defaults(func=cmd_train)

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
