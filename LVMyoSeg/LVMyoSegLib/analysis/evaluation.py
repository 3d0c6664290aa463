"""Slice-wise evaluation of an automatic label map against expert labels, and the
paper's Table 1 summary (per-fold mean (sd), then averaged over folds).

Only frames where the expert labelled a channel are scored: myocardium where
``known[..., myocardium]`` (Sunnybrook: end-diastole), blood pool where
``known[..., blood_pool]`` (end-diastole and end-systole).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..cine import Geometry
from ..labels import BLOOD_POOL, CHANNELS, MYOCARDIUM, Labels
from .metrics import slice_metrics, summarize

TABLE_METRICS = (("dsc", "DSC"), ("hd_mm", "HD (mm)"), ("apd_mm", "APD (mm)"),
                 ("apd_endo_mm", "APD endo (mm)"), ("apd_epi_mm", "APD epi (mm)"),
                 ("pool_dsc_ed", "Blood pool DSC, ED"), ("pool_dsc_es", "Blood pool DSC, ES"))
MYO_METRICS = tuple(key for key, _ in TABLE_METRICS if not key.startswith("pool_"))
POSITION_METRICS = TABLE_METRICS[:3]  # DSC, HD, APD: the by-slice-position table


def evaluate_case(auto: np.ndarray, expert: Labels, geometry: Geometry, case_id: str,
                  ed_frame: int | None = None) -> list[dict]:
    """Per-slice records for every expert-labelled frame of one case.

    Each record has ``case``, ``t``, ``z``, ``channel`` and the metrics of
    :func:`LVMyoSegLib.analysis.metrics.slice_metrics`; blood-pool records carry
    ``phase`` "ED" (a frame that also has myocardium labels, or ``ed_frame``) or "ES".
    """
    spacing_rc = (geometry.spacing[1], geometry.spacing[0])
    myo_known = expert.known[:, :, CHANNELS.index("myocardium")]
    ed_frames = set(np.flatnonzero(myo_known.any(axis=1)).tolist())
    if ed_frame is not None:
        ed_frames = {ed_frame}
    records = []
    for t, z in zip(*np.nonzero(myo_known)):
        m = slice_metrics(auto[t, z] == MYOCARDIUM, expert.label_map[t, z] == MYOCARDIUM, spacing_rc,
                          ring=True)
        records.append({"case": case_id, "t": int(t), "z": int(z), "channel": "myocardium", **m})
    for t, z in zip(*np.nonzero(expert.known[:, :, CHANNELS.index("blood_pool")])):
        m = slice_metrics(auto[t, z] == BLOOD_POOL, expert.label_map[t, z] == BLOOD_POOL, spacing_rc)
        records.append({"case": case_id, "t": int(t), "z": int(z), "channel": "blood_pool",
                        "phase": "ED" if int(t) in ed_frames else "ES", **m})
    return records


def case_summary(records: Sequence[dict]) -> dict[str, dict]:
    """Mean (sd) over the slices of one case (or fold) for each Table 1 metric."""
    myo = [r for r in records if r["channel"] == "myocardium"]
    out = {k: summarize([r[k] for r in myo]) for k in MYO_METRICS}
    for phase in ("ED", "ES"):
        pool = [r["dsc"] for r in records if r["channel"] == "blood_pool" and r.get("phase") == phase]
        out[f"pool_dsc_{phase.lower()}"] = summarize(pool)
    return out


def position_summary(records: Sequence[dict]) -> dict[str, dict]:
    """Myocardium DSC/HD/APD at the ends of each case's contoured stack vs the slices between.

    "end" = the first and last slice (along the stack) the expert contoured in each case, where
    the ring is partial (base: outflow tract; apex: small, partial-volume); "inner" = the rest.
    Mean (sd) over all slices of all cases in ``records``.
    """
    myo = [r for r in records if r["channel"] == "myocardium"]
    ends = {}
    for r in myo:
        lo, hi = ends.get(r["case"], (r["z"], r["z"]))
        ends[r["case"]] = (min(lo, r["z"]), max(hi, r["z"]))
    groups = {"end": [r for r in myo if r["z"] in ends[r["case"]]],
              "inner": [r for r in myo if r["z"] not in ends[r["case"]]]}
    return {name: {k: summarize([r[k] for r in group]) for k, _ in POSITION_METRICS}
            for name, group in groups.items()}


def average_over_folds(fold_summaries: Iterable[dict[str, dict]]) -> dict[str, dict]:
    """The paper's Table 1 figure: the mean over folds of each fold's mean and of its sd."""
    folds = list(fold_summaries)
    out = {}
    for key, _ in TABLE_METRICS:
        means = [f[key]["mean"] for f in folds if key in f]
        sds = [f[key]["sd"] for f in folds if key in f]
        out[key] = {"mean": float(np.nanmean(means)) if means else float("nan"),
                    "sd": float(np.nanmean(sds)) if sds else float("nan"), "folds": len(means)}
    return out


def format_cell(stat: dict, digits: int = 3) -> str:
    """``0.842 (0.080)`` as in the paper's Table 1."""
    if stat is None or not np.isfinite(stat.get("mean", np.nan)):
        return "n/a"
    sd = stat.get("sd", np.nan)
    return f"{stat['mean']:.{digits}f} ({sd:.{digits}f})" if np.isfinite(sd) else f"{stat['mean']:.{digits}f}"


def position_table(columns: dict[str, dict[str, dict]]) -> str:
    """Markdown: one row per model and slice position (:func:`position_summary`), DSC/HD/APD columns."""
    lines = ["| model | slices | n | " + " | ".join(label for _, label in POSITION_METRICS) + " |",
             "|---|---|---|" + "---|" * len(POSITION_METRICS)]
    for name, by_position in columns.items():
        for position, stats in by_position.items():
            lines.append(f"| {name} | {position} | {stats['dsc']['n']} | " +
                         " | ".join(format_cell(stats[k]) for k, _ in POSITION_METRICS) + " |")
    return "\n".join(lines)


def markdown_table(columns: dict[str, dict[str, dict]]) -> str:
    """A Markdown table with one column per model (e.g. "CNN") and one row per metric."""
    names = list(columns)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key, label in TABLE_METRICS:
        lines.append(f"| {label} | " + " | ".join(format_cell(columns[n].get(key)) for n in names) + " |")
    return "\n".join(lines)
