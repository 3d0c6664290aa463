"""``lvmyoseg batch``: segment a cohort on Dask (``dask.distributed``), one task per study.

- The client lists the studies, keeps the rows of an earlier run that are still up to date
  (:meth:`cohort.CohortTable.up_to_date`), submits one task per remaining study and writes
  each result into ``cohort.csv``/``cohort.json`` as it arrives (``as_completed``).
- Workers: a :class:`~distributed.LocalCluster` of ``workers`` processes on this machine, or an
  existing cluster (``scheduler`` address) whose workers have LVMyoSeg installed and see the
  inputs and the output folder at the same paths (a shared filesystem).
- Each worker holds the model once (:class:`ModelCache`, a worker plugin, loaded at the first
  study) and runs the network for one study at a time under a lock; with two task threads per
  worker the next study is read (and the last one written) while the network runs.
- A study that is refused (bad input, or an output folder ``segment`` would refuse:
  :class:`~LVMyoSegLib.errors.LVMyoSegError`) or fails (any other error, or its worker died)
  becomes a row with the reason; the batch goes on.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..errors import CancelledError, InputError, LVMyoSegError
from ..files import check_output_folder, output_folder
from ..model.bundle import member_count, verify_bundle
from ..model.rotations import check_rotations
from ..progress import ProgressEvent, ProgressFn
from .cohort import CohortTable, Study, base_row, input_sha256, is_ok, list_studies, study_row

try:  # optional at import time so the rest of the package never needs Dask
    from distributed import WorkerPlugin
except ImportError:  # pragma: no cover - dask[distributed] is a dependency
    WorkerPlugin = object  # type: ignore[misc,assignment]

THREADS_PER_WORKER = 2  # one study in the network, the next one being read or the last one written
CLOSE_TIMEOUT_S = 20


@dataclass(frozen=True)
class BatchSettings:
    """What every study task needs: where to write, which model, and the identity of that model."""

    out: Path
    model_dir: Path
    members: int
    model_id: str
    model_hash: str
    rotations: int  # test-time views (:mod:`LVMyoSegLib.model.rotations`), resolved: never None
    threshold: float = 0.5

    @property
    def plugin_name(self) -> str:
        return f"lvmyoseg-model-{self.model_hash[:16]}-{self.members}"

    def identity(self, input_hash: str | None) -> dict[str, Any]:
        return {"model_id": self.model_id, "model_hash": self.model_hash, "members": self.members,
                "rotations": self.rotations, "input_hash": input_hash}


class ModelCache(WorkerPlugin):
    """Per Dask worker: the ensemble (loaded at the first study, kept for all others) and the lock
    that lets one study at a time use it."""

    def __init__(self, model_dir: Path, members: int, *, ignore_interrupt: bool = False) -> None:
        self.model_dir, self.members = str(model_dir), int(members)
        self.ignore_interrupt = ignore_interrupt
        self._lock: threading.Lock | None = None
        self._loaded = None

    def setup(self, worker=None) -> None:
        self._lock, self._loaded = threading.Lock(), None
        if self.ignore_interrupt:  # a local worker: Ctrl-C is the client's to handle (it stops the cluster)
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            except ValueError:  # not the worker process's main thread: leave it
                pass

    def segment(self, cine, threshold: float, rotations: int):
        from ..model.onnx_runtime import load_onnx_ensemble
        from .pipeline import segment_cine

        assert self._lock is not None, "ModelCache.setup was not called"
        with self._lock:
            if self._loaded is None:
                self._loaded = load_onnx_ensemble(Path(self.model_dir), self.members)
            return segment_cine(cine, Path(self.model_dir), threshold=threshold, loaded=self._loaded,
                                rotations=rotations)


def segment_study(study: Study, settings: BatchSettings, cache: ModelCache | None = None) -> dict[str, Any]:
    """One study, start to end, on a worker (``cache``: this worker's :class:`ModelCache`); returns its row.

    The study's folder ``OUT/<id>`` is one :func:`~LVMyoSegLib.files.output_folder` unit, as
    ``segment`` writes it: checked and locked before the study is read, filled in a staging
    folder, swapped in whole. An untouched earlier LVMyoSeg result there (out of date: the batch
    redoes no other) is replaced; a folder holding anything else is refused and left as it is.
    """
    from ..analysis.wall_thickness import rv_insertion_pixel
    from ..io.readers import read_cine
    from .outputs import default_format, write_segmentation_outputs

    if cache is None:
        from distributed import get_worker

        cache = get_worker().plugins[settings.plugin_name]
    t0 = time.perf_counter()
    input_hash = None  # stays None when OUT/<id> is refused: such a row is redone on the next run
    out = settings.out / study.id
    try:
        with output_folder(out, written_by="lvmyoseg batch", protect=[study.path, settings.model_dir]) as staging:
            input_hash = input_sha256(study.path) if study.path.exists() else None
            cine = read_cine(study.path)
            read_s = time.perf_counter() - t0
            if study.rv_insertion is not None:
                rv_insertion_pixel(study.rv_insertion, cine.geometry, cine.frames.shape[2:])
            result = cache.segment(cine, settings.threshold, settings.rotations)
            write_segmentation_outputs(staging, cine, result, model_dir=settings.model_dir,
                                       file_format=default_format(study.path), read_seconds=read_s,
                                       rv_insertion_lps=study.rv_insertion)
        return study_row(study, out, runtime_s=time.perf_counter() - t0, **settings.identity(input_hash))
    except LVMyoSegError as exc:
        status = f"refused: {exc}"
    except Exception as exc:  # isolated: the batch goes on, the row says why
        logging.exception(f"LVMyoSeg batch: study {study.id} ({study.path}) failed")
        status = f"failed: {type(exc).__name__}: {exc}"
    return base_row(study, status, runtime_s=time.perf_counter() - t0, **settings.identity(input_hash))


@dataclass(frozen=True)
class BatchSummary:
    total: int
    kept: int
    ok: int
    refused: int
    failed: int
    seconds: float


def _start_client(workers: int, scheduler: str | None):
    """A Dask client of an existing cluster (``scheduler``) or of a new local cluster; returns
    ``(client, cluster or None)``."""
    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler), None
    env = {}
    if workers > 1:  # share the cores instead of each process sizing its thread pools to all of them
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        env = {"TF_NUM_INTRAOP_THREADS": threads, "OMP_NUM_THREADS": threads}
    cluster = LocalCluster(n_workers=workers, threads_per_worker=THREADS_PER_WORKER, processes=True,
                           dashboard_address=None, env=env)
    return Client(cluster), cluster


def run_batch(inputs: Path, out: Path, model_dir: Path, *, members: int | None = None,
              rotations: int | None = None, workers: int = 1, scheduler: str | None = None,
              progress: ProgressFn | None = None, say: Callable[[str], None] = print) -> BatchSummary:
    """Segment every study of ``inputs`` into ``out/<id>/`` and tabulate them in ``out/cohort.csv``,
    with ``members`` ensemble members (None: all) and ``rotations`` test-time views (None: the
    model's own).

    Raises :class:`~LVMyoSegLib.errors.CancelledError` on Ctrl-C, after the table holds every
    study finished so far.
    """
    if workers < 1:
        raise InputError(f"--workers {workers}: give at least 1 worker process.")
    if rotations is not None:
        check_rotations(rotations)
    t_start = time.perf_counter()
    out, model_dir = Path(out).resolve(), Path(model_dir).resolve()
    manifest = verify_bundle(model_dir)
    n_members = member_count(model_dir, manifest, members)
    from ..model.trust import manifest_sha256

    settings = BatchSettings(out, model_dir, n_members, manifest.model_id, manifest_sha256(model_dir),
                             manifest.rotations if rotations is None else rotations)
    studies = list_studies(Path(inputs), exclude=out)
    table = CohortTable(out, studies, {
        "inputs": str(Path(inputs).resolve()), "output": str(out), "model_dir": str(model_dir),
        "model_id": settings.model_id, "model_sha256": settings.model_hash, "members": n_members,
        "rotations": settings.rotations, "threshold": settings.threshold,
        "workers": None if scheduler else workers, "scheduler": scheduler,
        "lvmyoseg_version": __version__, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    pending, refused_now = [], 0
    for study in studies:
        kept = table.up_to_date(study, settings.model_hash, n_members, settings.rotations)
        if kept is not None:
            table.rows[study.id] = kept
            continue
        try:  # OUT/<id> that segment_study would refuse (e.g. the user's files): refused before any work
            check_output_folder(out / study.id, protect=[study.path, model_dir])
        except InputError as exc:  # no input hash: redone on the next run, when the folder may be fixed
            table.rows[study.id] = base_row(study, f"refused: {exc}", **settings.identity(None))
            refused_now += 1
            continue
        pending.append(study)
    total, kept = len(studies), len(studies) - len(pending) - refused_now
    refused_text = f", {refused_now} refused for their output folder" if refused_now else ""
    if not pending:
        table.write()
        summary = _summary(table, total, kept, t_start)
        say(f"Nothing to do: all {total} studies are up to date in {out / 'cohort.csv'} "
            f"({summary.ok} ok, {summary.refused} refused)." if not refused_now else
            f"{total} studies: {kept} up to date{refused_text}; nothing to segment.")
        return summary
    say(f"{total} studies: {kept} up to date{refused_text}, {len(pending)} to segment "
        + (f"on the Dask cluster at {scheduler}." if scheduler else
           f"on {workers} local worker process{'es' if workers > 1 else ''}."))

    from distributed import as_completed

    client = cluster = None
    futures = {}
    try:
        client, cluster = _start_client(workers, scheduler)
        client.register_plugin(ModelCache(model_dir, n_members, ignore_interrupt=cluster is not None),
                               name=settings.plugin_name)
        for i, study in enumerate(pending):
            futures[client.submit(segment_study, study, settings, pure=False, priority=-i)] = study
        done = bad = 0
        t_run = time.perf_counter()
        for future in as_completed(futures):
            study = futures[future]
            try:
                row = future.result()
            except Exception as exc:  # the task never returned: its worker died or was lost
                row = base_row(study, f"failed: {type(exc).__name__}: {exc}",
                               **settings.identity(None))
            table.add(row)
            done += 1
            bad += not is_ok(row)
            say(f"{study.id}: {row['status']}")
            if progress is not None:
                eta = (time.perf_counter() - t_run) / done * (len(pending) - done)
                progress(ProgressEvent((kept + done) / total, f"{kept + done}/{total} studies, {bad} not ok, "
                                                              f"ETA {eta / 60:.1f} min",
                                       kind="study", eta_s=eta, case=study.id))
    except KeyboardInterrupt:
        if futures:
            client.cancel(list(futures))
        table.write()  # Ctrl-C may have cut the last add() between its two files
        raise CancelledError(f"Stopped: {len(table.rows)} of {total} studies are finished in "
                             f"{out / 'cohort.csv'}; run the same command again to do the rest.") from None
    finally:
        _close(client, cluster)
    table.settings["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    table.write()
    return _summary(table, total, kept, t_start)


def _close(client, cluster) -> None:
    """Close the client and the local cluster, never hiding the exception that ended the batch."""
    for closable in (client, cluster):
        if closable is None:
            continue
        try:
            closable.close(timeout=CLOSE_TIMEOUT_S)
        except Exception as exc:  # e.g. a worker that died under Ctrl-C
            logging.warning(f"LVMyoSeg batch: closing {type(closable).__name__} failed: {exc}")


def _summary(table: CohortTable, total: int, kept: int, t_start: float) -> BatchSummary:
    statuses = [str(r["status"]) for r in table.rows.values()]
    return BatchSummary(total, kept, sum(s.startswith("ok") for s in statuses),
                        sum(s.startswith("refused") for s in statuses),
                        sum(s.startswith("failed") for s in statuses), time.perf_counter() - t_start)
