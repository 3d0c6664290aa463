"""Leave-one-case-out experiments and whole-dataset training on LVMyoSeg datasets.

``run_loo`` trains, for every held-out case, an ensemble on the other cases and
scores it on the held-out one, exactly as the paper's Table 1: the CNN stage of
a fold is shared by its one-level and multi-level models; every member i of an
RNN variant starts from CNN member i. Work is resumable: each stage of each
member checkpoints every epoch (see :mod:`LVMyoSegLib.training.loop`), and a fold
whose ``fold_<case>.json`` exists is not run again.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.evaluation import (average_over_folds, case_summary, evaluate_case, markdown_table,
                                   position_summary, position_table)
from ..errors import InputError
from ..files import atomic_path, read_json, write_json_atomic, write_text_atomic
from ..io.dataset import Case, dataset_hash, list_cases, read_case
from ..labels import CHANNELS, labels_from_probabilities
from ..model.bundle import load_keras_file, load_members, write_bundle
from ..model.ensemble import predict_ensemble
from ..model.variants import VARIANT_TITLES, VARIANTS
from ..preprocessing import preprocess
from ..preprocessing.localisation import localise
from ..progress import ProgressEvent, ProgressFn, part
from .edes import read_edes, usable_patients
from .loo_run import LooRun
from .loop import TrainConfig, fit_cnn, fit_rnn
from .outside_lv import with_known_empty_above_base
from .stage_one_frames import fold_cnn_paths, stage_one_arrays

WALL_TIME_FILE = "wall_time.json"  # in a run folder: seconds of all its invocations


@dataclass(frozen=True)
class ExperimentConfig:
    """What to train: variants, ensemble size, both stages' settings, preprocessing; ``rotations``:
    the quarter-turned views the held-out scoring averages (:mod:`LVMyoSegLib.model.rotations`),
    written into a trained bundle as its inference setting."""

    variants: tuple[str, ...] = VARIANTS
    members: int = 1
    cnn: TrainConfig = TrainConfig(epochs=60)
    rnn: TrainConfig = TrainConfig(epochs=20, augment=False)
    preprocessing: dict[str, Any] = field(default_factory=lambda: dict(preprocess.DEFAULT_PREPROCESSING))
    threshold: float = 0.5
    rotations: int = 4

    def to_dict(self) -> dict[str, Any]:
        return {"variants": list(self.variants), "members": self.members, "cnn": self.cnn.to_dict(),
                "rnn": self.rnn.to_dict(), "preprocessing": self.preprocessing,
                "threshold": self.threshold,
                **({"rotations": self.rotations} if self.rotations != 1 else {})}  # 1 view: as runs before it


@dataclass(frozen=True)
class PreparedCase:
    """A case in network space: ``x [Z, T, H, W, 1]``, ``y [Z, T, H, W, 2]``, ``known [Z, T, 2]``."""

    case: Case
    transform: preprocess.CropTransform
    x: np.ndarray
    y: np.ndarray
    known: np.ndarray


class RunClock:
    """Wall time of a resumable job summed over all its invocations, kept in ``path`` (JSON).

    :meth:`tracking` wraps a progress callback so the total is saved after every epoch: a killed
    invocation loses at most one epoch of its time.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.before = 0.0
        if self.path.is_file():
            try:
                self.before = float(json.loads(self.path.read_text())["seconds"])
            except (ValueError, KeyError, TypeError):  # unreadable: count from now, do not block a resume
                pass
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.t0 = time.perf_counter()

    def save(self) -> float:
        """Write the total so far; returns it."""
        seconds = self.before + time.perf_counter() - self.t0
        write_json_atomic(self.path, {"seconds": round(seconds, 1)})
        return seconds

    def tracking(self, progress: ProgressFn | None) -> ProgressFn:
        def track(event: ProgressEvent) -> None:
            if event.kind == "epoch":
                self.save()
            if progress is not None:
                progress(event)
        return track


def check_settings(path: Path, settings: dict[str, Any]) -> None:
    """Write a new run's ``settings`` to ``path``; refuse to resume a run whose settings differ."""
    if not path.is_file():
        write_json_atomic(path, settings)
    elif read_json(path, "Choose a new output folder.") != json.loads(json.dumps(settings)):
        raise InputError(f"{path.parent} holds a run with other settings ({path}); resume it with the "
                         "same settings or choose a new output folder.")


def prepare_case(case: Case, preprocessing: dict[str, Any]) -> PreparedCase:
    """Localise the LV and map a case's cine and labels into network space.

    A case whose expert labelled every LV slice of its labelled frames (``complete_stacks``
    in its case.json) also gets known-empty labels above the base (:mod:`LVMyoSegLib.training.outside_lv`).
    """
    transform = localise(case.cine, **preprocessing)
    x = preprocess.to_network(case.cine, transform)
    labels = with_known_empty_above_base(case.labels) if case.info.get("complete_stacks") else case.labels
    y, known = preprocess.labels_to_network(labels, transform)
    return PreparedCase(case, transform, x, y, known)


def training_arrays(prepared: Sequence[PreparedCase]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate the labelled slices (cycles) of several cases."""
    phases = {p.x.shape[1] for p in prepared}
    if len(phases) > 1:
        listing = "; ".join(f"{t} phases: " + ", ".join(p.case.case_id for p in prepared if p.x.shape[1] == t)
                            for t in sorted(phases))
        raise InputError(f"Training cases have different numbers of cardiac phases ({listing}). The "
                         "ConvLSTM trains on whole cycles of one length: train on cases with the same "
                         "number of phases.")
    xs, ys, ks = [], [], []
    for p in prepared:
        keep = p.known.any(axis=(1, 2))
        xs.append(p.x[keep]), ys.append(p.y[keep]), ks.append(p.known[keep])
    if not xs or sum(len(k) for k in ks) == 0:
        raise InputError("The training cases hold no labelled slice.")
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ks)


def train_variants(prepared: Sequence[PreparedCase], run_dir: Path, config: ExperimentConfig, *,
                   initial: dict[str, list] | None = None, cnns: Sequence | None = None,
                   progress: ProgressFn | None = None,
                   cancel: Callable[[], bool] | None = None) -> dict[str, list]:
    """Train ``config.members`` members of every variant in ``config.variants`` on ``prepared``.

    CNN member i is shared by all variants; RNN member i starts from it.
    ``initial[variant][i]`` fine-tunes from an existing model instead of training from scratch.
    ``cnns[i]``, when given, is member i's stage 1, already trained elsewhere (e.g. by the
    cross-validation over many hearts, :mod:`LVMyoSegLib.training.cross_validation`): stage 1 is skipped.
    """
    if cnns is not None and len(cnns) < config.members:
        raise InputError(f"{len(cnns)} stage-1 models for {config.members} members; give one per member.")
    x, y, known = training_arrays(prepared)
    models: dict[str, list] = {v: [] for v in config.variants}
    cnn_epochs = 0 if cnns is not None else config.cnn.epochs
    member_epochs = _member_epochs(config, cnn_epochs)
    for i in range(config.members):
        def tagged(done: int, epochs: int, i: int = i) -> ProgressFn | None:
            """Progress of member i's stage that runs ``epochs`` after ``done`` of the member's."""
            total = max(1, config.members * member_epochs)
            return part(progress, (i * member_epochs + done) / total, epochs / total,
                        f"member {i + 1}/{config.members}", member=i, members=config.members)

        start = None
        if initial:
            start = next(iter(initial.values()))[i]
        member_dir = Path(run_dir) / f"member_{i}"
        cnn = cnns[i] if cnns is not None else fit_cnn(
            x, y, known, member_dir / "cnn", dataclasses.replace(config.cnn, seed=config.cnn.seed + i),
            initial=start, progress=tagged(0, cnn_epochs), cancel=cancel).model
        done = cnn_epochs
        for variant in config.variants:
            if variant == "cnn":
                models["cnn"].append(cnn)
                continue
            start_rnn = (initial or {}).get(variant, [None] * config.members)[i]
            fit = fit_rnn(x, y, known, cnn, member_dir / f"rnn_{variant}",
                          dataclasses.replace(config.rnn, seed=config.rnn.seed + i), variant=variant,
                          initial=start_rnn, progress=tagged(done, config.rnn.epochs), cancel=cancel)
            done += config.rnn.epochs
            models[variant].append(fit.model)
    return models


def _member_epochs(config: ExperimentConfig, cnn_epochs: int) -> int:
    """The epochs of one member: ``cnn_epochs`` of stage 1 and stage 2's of each ConvLSTM variant."""
    return cnn_epochs + config.rnn.epochs * sum(v != "cnn" for v in config.variants)


def predict_case(models: Sequence, prepared: PreparedCase, threshold: float,
                 rotations: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities [T, Z, Y, X, 2], label map) of an ensemble on a prepared case, on its input grid."""
    probs = preprocess.to_input(predict_ensemble(models, prepared.x, rotations=rotations), prepared.transform)
    return probs, labels_from_probabilities(probs, threshold)


def run_loo(dataset_dir: Path, out_dir: Path, config: ExperimentConfig, *,
            init_bundle: Path | None = None, cases: Sequence[str] | None = None,
            stage_one: Path | None = None,
            progress: ProgressFn | None = None, cancel: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Leave-one-case-out over ``dataset_dir`` into the run folder ``out_dir`` (:class:`LooRun`).

    With ``stage_one`` (a cross-validation run folder, :func:`LVMyoSegLib.training.cross_validation.run_cv`)
    each fold's CNN members are the cross-validation fold's that held the same patient out
    (trained on many more hearts than the dataset's other cases); only stage 2 is trained here.

    With ``init_bundle`` every fold fine-tunes that bundle's members (its own
    variant only) and the held-out case is also scored with the starting model
    ("before"), so the table shows before vs after. Otherwise, with more than one member, each
    variant's member 0 is also scored alone (``<variant>_member_0``): the ensemble's gain.
    """
    run = LooRun(Path(out_dir))
    case_ids = list(cases) if cases else list_cases(dataset_dir)
    if len(case_ids) < 2:
        raise InputError(f"Leave-one-out needs at least 2 cases; {dataset_dir} has {len(case_ids)}.")
    initial_models: dict[str, list] | None = None
    if init_bundle is not None:
        if stage_one is not None:
            raise InputError("Give either a bundle to fine-tune (--init) or a cross-validation run "
                             "for stage 1 (--stage-one), not both.")
        manifest, members = load_members(init_bundle, config.members)
        config = dataclasses.replace(config, variants=(manifest.variant,), preprocessing=manifest.preprocessing)
        initial_models = {manifest.variant: members}
    stage_one_paths = {} if stage_one is None else {c: fold_cnn_paths(stage_one, c, config.members)
                                                    for c in case_ids}
    settings = {"dataset": Path(dataset_dir).name, "dataset_sha256": dataset_hash(dataset_dir),
                "cases": case_ids, "init": Path(init_bundle).name if init_bundle else "scratch",
                **({"stage_one": Path(stage_one).name} if stage_one is not None else {}),
                **config.to_dict()}
    run.folder.mkdir(parents=True, exist_ok=True)  # only once the inputs are read and checked
    check_settings(run.settings, settings)
    t_start = time.perf_counter()
    prepared = {cid: prepare_case(read_case(dataset_dir, cid), config.preprocessing) for cid in case_ids}
    for k, held_out in enumerate(case_ids):
        if run.fold_record(held_out).is_file():
            continue
        cnns = None
        if stage_one is not None:
            if not all(p.is_file() for p in stage_one_paths[held_out]):  # its CV fold has not finished:
                continue                                                 # a later run does it
            cnns = [load_keras_file(p) for p in stage_one_paths[held_out]]
        clock = RunClock(run.fold_dir(held_out) / WALL_TIME_FILE)
        fold_progress = part(progress, k / len(case_ids), 1 / len(case_ids),
                             f"fold {k + 1}/{len(case_ids)} ({held_out})", fold=k, folds=len(case_ids), case=held_out)
        train = [prepared[c] for c in case_ids if c != held_out]
        models = train_variants(train, run.fold_dir(held_out), config, initial=initial_models,
                                cnns=cnns, progress=clock.tracking(fold_progress), cancel=cancel)
        test = prepared[held_out]
        fold: dict[str, Any] = {"case": held_out, "records": {}, "summary": {}}
        scored = dict(models)
        if initial_models is not None:
            scored = {"before": next(iter(initial_models.values())), "after": next(iter(models.values()))}
        elif config.members > 1:  # the ensemble's gain: its member 0 alone beside it
            scored.update({f"{name}{ALONE}": members[:1] for name, members in models.items()})
        for name, members in scored.items():
            probabilities, label_map = predict_case(members, test, config.threshold, config.rotations)
            records = evaluate_case(label_map, test.case.labels, test.case.cine.geometry, held_out)
            fold["records"][name] = records
            fold["summary"][name] = case_summary(records)
            with atomic_path(run.predictions(held_out, name), suffix=".npz") as tmp:
                np.savez_compressed(tmp, label_map=label_map,
                                    probabilities=probabilities.astype(np.float16))  # for QC in validate-function
        fold["wall_time_s"] = clock.save()  # summed over the invocations that worked on this fold
        write_json_atomic(run.fold_record(held_out), fold)
    results = summarise_loo(run.folder, wall_time_s=time.perf_counter() - t_start)
    loo_examples_figure(run.folder, dataset_dir, run.examples_figure)
    return results


ALONE = "_member_0"  # suffix of a model name in a LOO run: the ensemble's member 0 scored alone


def model_title(name: str) -> str:
    """Table title of a scored model of a LOO run: a variant, "before"/"after", or a member 0 alone."""
    base = name.removesuffix(ALONE)
    return VARIANT_TITLES.get(base, base) + (", member 0 alone" if name.endswith(ALONE) else "")


def summarise_loo(out_dir: Path, wall_time_s: float | None = None) -> dict[str, Any]:
    """Collect the fold files of a LOO run into its results, table and per-case plot (:class:`LooRun`)."""
    run = LooRun(Path(out_dir))
    settings = run.read_settings()
    folds = run.read_folds(settings["cases"])
    names = list(folds[0]["summary"]) if folds else []
    overall = {n: average_over_folds(f["summary"][n] for f in folds) for n in names}
    by_position = {n: position_summary([r for f in folds for r in f["records"][n]]) for n in names}
    results = {"settings": settings, "folds_done": len(folds), "folds_total": len(settings["cases"]),
               "overall": overall, "by_position": by_position, "folds": folds,
               "fold_wall_time_s": {f["case"]: round(f["wall_time_s"], 1) for f in folds}}
    if wall_time_s is not None:
        results["last_invocation_wall_time_s"] = round(wall_time_s, 1)
    write_json_atomic(run.results, results)
    titles = {n: model_title(n) for n in names}
    lines = [f"Leave-one-case-out over {len(folds)} of {len(settings['cases'])} folds "
             f"({settings['members']} member(s) per ensemble), slice-wise mean (sd) averaged over folds.", "",
             markdown_table({titles[n]: overall[n] for n in names}), "",
             "Myocardium by slice position: the first and last contoured slice of each stack (base and "
             "apex) vs the slices between, mean (sd) over all slices of the folds done.", "",
             position_table({titles[n]: by_position[n] for n in names}), ""]
    for f in folds:
        lines += [f"Fold {f['case']}:", "", markdown_table({titles[n]: f["summary"][n] for n in names}), ""]
    write_text_atomic(run.table, "\n".join(lines))
    if folds:
        from ..reporting.figures import loo_scores_figure

        loo_scores_figure({f["case"]: f["summary"] for f in folds}, titles, run.scores_figure)
    return results


def loo_examples_figure(out_dir: Path, dataset_dir: Path, path: Path, n_examples: int = 3) -> Path:
    """Fig. 3-style picture of held-out slices: for the folds done, the expert-labelled slices
    where the models disagree most (largest spread of myocardium DSC between them)."""
    from ..reporting.figures import consecutive_frames_figure

    run = LooRun(Path(out_dir))
    candidates = []
    for fold in run.read_folds(run.read_settings()["cases"]):
        case_id = fold["case"]
        by_slice: dict[tuple[int, int], list[float]] = {}
        for name, records in fold["records"].items():
            for r in records:
                if r["channel"] == "myocardium":
                    by_slice.setdefault((r["t"], r["z"]), []).append(r["dsc"])
        for (t, z), dscs in by_slice.items():
            candidates.append((max(dscs) - min(dscs), case_id, t, z))
    if not candidates:
        raise InputError(f"{out_dir} has no finished fold to draw.")
    candidates.sort(reverse=True)
    chosen = candidates[:n_examples]
    # one figure per case keeps the images of a case together; stack them in one PNG
    first_case = chosen[0][1]
    case = read_case(dataset_dir, first_case)
    predictions = {name: np.load(p)["label_map"] for name, p in run.saved_predictions(first_case).items()}
    known = (*VARIANTS, "before", "after")  # the paper's order; a fine-tuning run: start model first
    order = [v for v in known if v in predictions] + [v for v in predictions
                                                       if v not in known and not v.endswith(ALONE)]
    examples = [(t, z) for _, cid, t, z in chosen if cid == first_case]
    return consecutive_frames_figure(case.cine, case.labels.label_map,
                                     {v: predictions[v] for v in order}, examples, path,
                                     titles={v: f"{first_case} {VARIANT_TITLES.get(v, v)}" for v in order})


def train_final(dataset_dir: Path, bundle_dir: Path, run_dir: Path, config: ExperimentConfig, *,
                variant: str = "multi_level", model_id: str, init_bundle: Path | None = None,
                metrics: dict[str, Any] | None = None, cases: Sequence[str] | None = None,
                edes_root: Path | None = None,
                progress: ProgressFn | None = None, cancel: Callable[[], bool] | None = None) -> Path:
    """Train ``variant`` on every case of a dataset (or on ``cases``) and write a new model bundle.

    With ``edes_root`` (labelled ED/ES frames, :mod:`LVMyoSegLib.training.edes`) stage 1 trains on every
    patient there too (a patient with a cine in the dataset contributes its cine's frames once).
    """
    case_ids = list(cases) if cases else list_cases(dataset_dir)
    initial, parent = None, None
    if init_bundle is not None:
        manifest, members = load_members(init_bundle, config.members)
        variant, parent = manifest.variant, manifest.model_id
        config = dataclasses.replace(config, preprocessing=manifest.preprocessing)
        initial = {variant: members}
    config = dataclasses.replace(config, variants=(variant,))
    clock = RunClock(Path(run_dir) / WALL_TIME_FILE)
    prepared = [prepare_case(read_case(dataset_dir, c), config.preprocessing) for c in case_ids]
    cnns, edes_record, stage_one = None, {}, 0.0
    if edes_root is not None:
        patients, excluded = usable_patients(read_edes(edes_root))
        edes_record = {"edes": Path(edes_root).name, "edes_patients": sorted(patients), "edes_excluded": excluded}
        stage_one = config.cnn.epochs / max(1, _member_epochs(config, config.cnn.epochs))  # share of the epochs
        cnns = _stage_one_on_all(patients, prepared, run_dir, config, initial,
                                 part(clock.tracking(progress), 0.0, stage_one), cancel)
    models = train_variants(prepared, run_dir, config, initial=initial, cnns=cnns,
                            progress=part(clock.tracking(progress), stage_one, 1.0 - stage_one), cancel=cancel)
    wall = clock.save()  # summed over every invocation of this run folder (resumes included)
    write_bundle(bundle_dir, models[variant], model_id=model_id, variant=variant, channels=CHANNELS,
                 preprocessing=config.preprocessing,
                 training={"dataset": Path(dataset_dir).name, "dataset_sha256": dataset_hash(dataset_dir),
                           "cases": case_ids, "settings": config.to_dict(),
                           **edes_record,
                           "wall_time_s": round(wall, 1), "init": str(init_bundle) if init_bundle else "scratch"},
                 metrics=metrics or {}, parent=parent, rotations=config.rotations,
                 member_info=[{"seed": config.cnn.seed + i} for i in range(config.members)])
    return Path(bundle_dir)


def _stage_one_on_all(patients: dict[str, Any], prepared: Sequence[PreparedCase], run_dir: Path,
                      config: ExperimentConfig, initial: dict[str, list] | None,
                      progress: ProgressFn | None, cancel: Callable[[], bool] | None) -> list:
    """Stage-1 members trained on every ED/ES patient and every cine (each patient's frames once)."""
    cines = {p.case.case_id: p for p in prepared}
    x, y, known, ids = stage_one_arrays(sorted(set(patients) | set(cines)), patients, cines,
                                        config.preprocessing)
    cnns = []
    for i in range(config.members):
        start = next(iter(initial.values()))[i] if initial else None
        cnns.append(fit_cnn(x, y, known, Path(run_dir) / f"member_{i}" / "cnn",
                            dataclasses.replace(config.cnn, seed=config.cnn.seed + i), initial=start,
                            groups=ids, progress=part(progress, i / config.members, 1 / config.members,
                                                      f"member {i + 1}/{config.members}", member=i,
                                                      members=config.members),
                            cancel=cancel).model)
    return cnns
