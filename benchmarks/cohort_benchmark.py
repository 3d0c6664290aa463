"""Cohort throughput: ``lvmyoseg batch`` (1 and 2 local Dask workers) against a shell loop of
``lvmyoseg segment`` (one process per study, the model loaded every time), in one run.

    PYTHONPATH=LVMyoSeg .venv/bin/python benchmarks/cohort_benchmark.py \\
        [--studies 20] [--members N] [--model BUNDLE] [--only loop,batch1,batch2] [--json OUT]

The 5 real Sunnybrook cines are repeated (as a CSV study list with distinct ids) up to
``--studies``. Reported: wall time, studies per hour, the batch/loop ratio and the 2/1 worker
scaling. On a 2-core machine 2 workers cannot scale (each gets one core instead of two): the
number shows what the per-worker overhead costs there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_kind

REPO = Path(__file__).resolve().parents[1]
SUNNYBROOK = Path(os.environ.get("LVMYOSEG_SUNNYBROOK", REPO.parent / "shared" / "data" / "sunnybrook"))


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "LVMyoSegLib.cli", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "LVMyoSeg"), env.get("PYTHONPATH")]))
    return env


def study_list(n: int, folder: Path) -> Path:
    """A CSV listing the 5 real cines repeated up to ``n`` studies."""
    cines = sorted(p for p in (SUNNYBROOK / "dicom").iterdir() if p.is_dir())
    if not cines:
        sys.exit(f"no Sunnybrook cines under {SUNNYBROOK / 'dicom'} (set LVMYOSEG_SUNNYBROOK)")
    rows = ["path,id"] + [f"{cines[i % len(cines)]},{cines[i % len(cines)].name}_{i // len(cines)}" for i in range(n)]
    path = folder / "studies.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def run_loop(csv_path: Path, out: Path, model_args: list[str]) -> float:
    """One ``lvmyoseg segment`` process per study, as a shell loop would run them."""
    lines = csv_path.read_text().splitlines()[1:]
    t0 = time.perf_counter()
    for line in lines:
        path, study_id = line.split(",")
        code = subprocess.run(_cli("segment", path, "-o", str(out / study_id), *model_args), env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        if code not in (0, 3):  # 3: outputs written, function values withheld
            sys.exit(f"lvmyoseg segment {path} failed with exit code {code}")
    return time.perf_counter() - t0


def run_batch(csv_path: Path, out: Path, model_args: list[str], workers: int) -> float:
    t0 = time.perf_counter()
    subprocess.run(_cli("batch", str(csv_path), "-o", str(out), "--workers", str(workers), *model_args),
                   check=True, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    rows = json.loads((out / "cohort.json").read_text())["studies"]
    bad = [r["id"] for r in rows if not r["status"].startswith("ok")]
    if bad:
        sys.exit(f"batch with {workers} workers: studies not ok: {bad}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--members", type=int)
    parser.add_argument("--model")
    parser.add_argument("--only", default="loop,batch1,batch2")
    parser.add_argument("--json")
    args = parser.parse_args()
    model_args = (["--model", args.model] if args.model else []) + (
        ["--members", str(args.members)] if args.members else [])
    parts = args.only.split(",")
    work = Path(tempfile.mkdtemp(prefix="lvmyoseg-cohort-bench-"))
    results: dict[str, dict] = {}
    try:
        csv_path = study_list(args.studies, work)
        for part in parts:
            out = work / part
            if part == "loop":
                seconds = run_loop(csv_path, out, model_args)
            elif part.startswith("batch"):
                seconds = run_batch(csv_path, out, model_args, int(part[len("batch"):]))
            else:
                sys.exit(f"unknown part {part!r}")
            results[part] = {"seconds": round(seconds, 1),
                             "studies_per_hour": round(3600 * args.studies / seconds, 1)}
            print(f"{part:>7}: {args.studies} studies in {seconds:7.1f} s = "
                  f"{results[part]['studies_per_hour']:6.1f} studies/h", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if "loop" in results and "batch1" in results:
        results["batch1_over_loop"] = round(results["loop"]["seconds"] / results["batch1"]["seconds"], 2)
        print(f"batch (1 worker) / shell loop throughput: {results['batch1_over_loop']:.2f}x")
    if "batch1" in results and "batch2" in results:
        results["workers_2_over_1"] = round(results["batch1"]["seconds"] / results["batch2"]["seconds"], 2)
        print(f"2 workers / 1 worker throughput: {results['workers_2_over_1']:.2f}x on {os.cpu_count()} cores")
    print(f"CPU: {cpu_kind()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"studies": args.studies, "cpu": cpu_kind(),
                                               "members": args.members, "results": results}, indent=2))


if __name__ == "__main__":
    main()
