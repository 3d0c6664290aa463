"""Cardiac function as a user gets it, against the expert, on the held-out patients of a
leave-one-out run (every patient unseen by its model).

Per held-out patient:

- **expert**: EDV, ESV, SV, EF and LV mass from the expert labels at the expert's ED and ES
  frames, on the slices the expert contoured.
- **product** ("own"): the same from the automatic label map of the whole cine, exactly as
  ``lvmyoseg segment`` reports them: the product's own ED and ES frames and its own slice
  choice per phase (:mod:`LVMyoSegLib.analysis.slice_selection`); no expert information.
- **expert's slices**: the automatic labels at the expert's ED/ES frames, summed over the
  expert's slices only (what earlier versions reported), so the effect of the slice choice
  is visible beside the product's figures.

Agreement: per-patient table and Bland–Altman analysis (mean difference, limits of
agreement = mean ± 1.96 sd) of product and expert's-slices figures. Targets (issue 15): EF
within 5 points for every patient, EDV and ESV within 10%.

**QC check**: on every frame-slice where the expert drew myocardium, the automatic
myocardium's DSC against the expert's and the frame-slice's QC score (:mod:`LVMyoSegLib.analysis.qc`).
Over all patients, the worst 10% of these slices by DSC (at least one) are compared with
(a) the "review these frames first" lists: the same frame and slice, and the same slice in
the same phase (the list names it at the product's own ED or ES frame, which is often one or
two frames from the expert's), (b) the top 10% by QC score among the expert's slices; and
the Spearman correlation of QC score with DSC (negative: worse slices score higher). The
chance level of (a) is the lists' share of the expert's frame-slices. QC uses the
probabilities when the run saved them (``probabilities`` in the fold's predictions,
:class:`~LVMyoSegLib.training.loo_run.LooRun`), else its other signals only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.cardiac_function import compute_cardiac_function
from ..analysis.function_report import assess
from ..analysis.metrics import dice
from ..analysis.qc import score_array
from ..errors import InputError
from ..files import write_json_atomic, write_text_atomic
from ..io.dataset import read_case
from ..io.sunnybrook import cardiac_phases
from ..labels import CHANNELS, MYOCARDIUM, Labels
from .loo_run import LooRun

QUANTITIES = (("edv_ml", "EDV (mL)"), ("esv_ml", "ESV (mL)"), ("sv_ml", "SV (mL)"),
              ("ef_percent", "EF (points)"), ("lv_mass_g", "LV mass (g)"))
_KEYS = tuple(k for k, _ in QUANTITIES)


def _values(function) -> dict[str, float | None]:
    return {k: (None if function is None or not math.isfinite(getattr(function, k))
                else float(getattr(function, k))) for k in _KEYS}


def compare_case(expert: Labels, auto: np.ndarray, geometry, case_id: str, *,
                 trigger_times_ms=None, probabilities: np.ndarray | None = None) -> dict[str, Any]:
    """Expert, product ("own") and expert's-slices figures for one case, and its QC records."""
    ed, es = cardiac_phases(expert)
    pool_known = expert.known[:, :, CHANNELS.index("blood_pool")]
    slices = np.flatnonzero(pool_known[ed] & pool_known[es])
    n_z = auto.shape[1]
    e = compute_cardiac_function(expert.label_map, geometry, ed_frame=ed, es_frame=es,
                                 include={(t, z): bool(z in slices) for t in (ed, es) for z in range(n_z)})
    own = assess(auto, geometry, trigger_times_ms, probabilities=probabilities)
    restricted = np.zeros_like(auto)
    for t in (ed, es):
        restricted[t, slices] = auto[t, slices]
    a = compute_cardiac_function(restricted, geometry, ed_frame=ed, es_frame=es,
                                 include={(t, z): bool(z in slices) for t in (ed, es) for z in range(n_z)})
    f = own.function
    qc_records = []
    if own.qc is not None:
        scores = score_array(own.qc, auto.shape[:2])
        review = {(r["frame"], r["slice"]) for r in own.qc["review_first"]}
        same_phase = {} if f is None else {ed: f.ed_frame, es: f.es_frame}
        for t, z in zip(*np.nonzero(expert.known[:, :, CHANNELS.index("myocardium")])):
            near = {(int(t), int(z)), (same_phase.get(int(t), int(t)), int(z))}
            qc_records.append({"frame": int(t), "slice": int(z),
                               "dsc": dice(auto[t, z] == MYOCARDIUM, expert.label_map[t, z] == MYOCARDIUM),
                               "qc_score": float(scores[t, z]), "in_review": (int(t), int(z)) in review,
                               "in_review_same_phase": bool(near & review)})
    return {"case": case_id, "ed_frame": ed, "es_frame": es, "slices": slices.tolist(),
            "expert": _values(e), "own": _values(f), "expert_slices": _values(a),
            "own_frames": None if f is None else {"ed": f.ed_frame, "es": f.es_frame},
            "own_slices": None if f is None else {"ed": f.slices.counted_text(f.ed_frame),
                                                  "es": f.slices.counted_text(f.es_frame)},
            "withheld": own.withheld, "qc": qc_records}


def bland_altman(expert, auto) -> dict[str, float | None]:
    """Mean difference (auto - expert) and 95% limits of agreement over the pairs with both values."""
    pairs = [(float(x), float(y)) for x, y in zip(expert, auto) if x is not None and y is not None]
    d = np.array([y - x for x, y in pairs])
    if d.size == 0:
        return {"mean_diff": None, "sd_diff": None, "loa_low": None, "loa_high": None, "n": 0}
    sd = float(d.std(ddof=1)) if d.size > 1 else None
    m = float(d.mean())
    return {"mean_diff": m, "sd_diff": sd, "loa_low": None if sd is None else m - 1.96 * sd,
            "loa_high": None if sd is None else m + 1.96 * sd, "n": int(d.size)}


def qc_check(rows: list[dict]) -> dict[str, Any]:
    """Does QC point at the worst slices? (module docstring)."""
    from scipy.stats import spearmanr

    recs = [r for row in rows for r in row["qc"]]
    if not recs:
        return {"n_slices": 0}
    dsc = np.array([r["dsc"] for r in recs])
    score = np.array([r["qc_score"] for r in recs])
    n_worst = max(1, int(math.ceil(0.1 * len(recs))))
    worst = np.argsort(dsc, kind="stable")[:n_worst]
    top = set(np.argsort(-score, kind="stable")[:n_worst].tolist())
    rho = spearmanr(score, dsc).statistic if np.ptp(score) > 0 and np.ptp(dsc) > 0 else float("nan")
    return {"n_slices": len(recs), "n_worst": n_worst,
            "worst_dsc_max": float(dsc[worst].max()),
            "caught_by_review_list": float(np.mean([recs[i]["in_review"] for i in worst])),
            "caught_by_review_list_same_phase": float(np.mean([recs[i]["in_review_same_phase"] for i in worst])),
            "review_list_share_of_slices": float(np.mean([r["in_review"] for r in recs])),
            "caught_by_top10_qc": float(np.mean([i in top for i in worst])),
            "spearman_qc_vs_dsc": None if not math.isfinite(rho) else float(rho)}


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "–" if v is None else format(v, spec)


def _pct(a: float | None, e: float | None) -> float | None:
    return None if a is None or e is None or e == 0 else 100.0 * (a / e - 1.0)


def markdown(result: dict) -> str:
    """The per-patient table, Bland–Altman table, targets and QC check as Markdown."""
    rows = result["cases"]
    lines = ["Product = the product's own ED/ES frames and slice choice; expert's slices = automatic "
             "labels summed over the expert's slices at the expert's frames.", "",
             "| patient | slices (own, ED / ES) | EDV expert | EDV own | EDV exp. slices | ESV expert | "
             "ESV own | ESV exp. slices | EF expert | EF own | EF exp. slices | ΔEF own | ΔEDV own % | "
             "ΔESV own % | mass expert | mass own |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        e, o, s = r["expert"], r["own"], r["expert_slices"]
        sl = "–" if r["own_slices"] is None else f"{r['own_slices']['ed']} / {r['own_slices']['es']}"
        sl += " (withheld)" if r["withheld"] else ""
        d_ef = None if o["ef_percent"] is None else o["ef_percent"] - e["ef_percent"]
        lines.append(
            f"| {r['case']} | {sl} | {_fmt(e['edv_ml'])} | {_fmt(o['edv_ml'])} | {_fmt(s['edv_ml'])} | "
            f"{_fmt(e['esv_ml'])} | {_fmt(o['esv_ml'])} | {_fmt(s['esv_ml'])} | {_fmt(e['ef_percent'])} | "
            f"{_fmt(o['ef_percent'])} | {_fmt(s['ef_percent'])} | {_fmt(d_ef, '+.1f')} | "
            f"{_fmt(_pct(o['edv_ml'], e['edv_ml']), '+.1f')} | {_fmt(_pct(o['esv_ml'], e['esv_ml']), '+.1f')} | "
            f"{_fmt(e['lv_mass_g'])} | {_fmt(o['lv_mass_g'])} |")
    lines += ["", "| quantity | own: mean diff | own: limits of agreement | expert's slices: mean diff | "
                  "expert's slices: limits |", "|---|---|---|---|---|"]
    for k, label in QUANTITIES:
        o, s = result["bland_altman"]["own"][k], result["bland_altman"]["expert_slices"][k]
        lines.append(f"| {label} | {_fmt(o['mean_diff'], '+.2f')} | {_fmt(o['loa_low'], '+.2f')} to "
                     f"{_fmt(o['loa_high'], '+.2f')} | {_fmt(s['mean_diff'], '+.2f')} | "
                     f"{_fmt(s['loa_low'], '+.2f')} to {_fmt(s['loa_high'], '+.2f')} |")
    t = result["targets"]
    lines += ["", f"Targets (own figures): EF within 5 points for {t['ef_within_5']} of {len(rows)} "
                  f"patients; EDV within 10% for {t['edv_within_10pct']}, ESV within 10% for "
                  f"{t['esv_within_10pct']}; function withheld for {t['withheld']}."]
    q = result["qc_check"]
    if q.get("n_slices"):
        lines += [f"QC check on {q['n_slices']} expert-contoured slices: of the worst {q['n_worst']} by "
                  f"myocardium DSC (DSC <= {q['worst_dsc_max']:.3f}), {100 * q['caught_by_review_list']:.0f}% "
                  f"are on the review lists ({100 * q['caught_by_review_list_same_phase']:.0f}% in the same "
                  f"phase; the lists hold {100 * q['review_list_share_of_slices']:.0f}% of these slices) and "
                  f"{100 * q['caught_by_top10_qc']:.0f}% in the top 10% by QC score; Spearman rho (QC score "
                  f"vs DSC) {_fmt(q['spearman_qc_vs_dsc'], '+.2f')}."]
    return "\n".join(lines) + "\n"


def validate_loo_run(run_dir: Path, dataset_dir: Path, out_dir: Path,
                     variant: str = "multi_level") -> dict[str, Any]:
    """Compare expert and product function for every finished fold; write JSON, Markdown, PNG."""
    from ..reporting.figures import bland_altman_figure

    run, out_dir = LooRun(Path(run_dir)), Path(out_dir)
    rows = []
    for case_id in run.read_settings()["cases"]:
        pred = run.predictions(case_id, variant)
        if not run.fold_record(case_id).is_file() or not pred.is_file():
            continue
        case = read_case(dataset_dir, case_id)
        with np.load(pred) as saved:
            label_map = saved["label_map"]
            probabilities = saved["probabilities"].astype(np.float32) if "probabilities" in saved else None
        rows.append(compare_case(case.labels, label_map, case.cine.geometry, case_id,
                                 trigger_times_ms=case.cine.trigger_times_ms, probabilities=probabilities))
    if not rows:
        raise InputError(f"{run.folder} has no finished fold with {variant} predictions.")
    stats = {which: {k: bland_altman([r["expert"][k] for r in rows], [r[which][k] for r in rows])
                     for k in _KEYS} for which in ("own", "expert_slices")}

    def within(key: str, tol_pct: float) -> int:
        return sum(1 for r in rows if (p := _pct(r["own"][key], r["expert"][key])) is not None
                   and abs(p) <= tol_pct)

    targets = {"ef_within_5": sum(1 for r in rows if r["own"]["ef_percent"] is not None
                                  and abs(r["own"]["ef_percent"] - r["expert"]["ef_percent"]) <= 5.0),
               "edv_within_10pct": within("edv_ml", 10.0), "esv_within_10pct": within("esv_ml", 10.0),
               "withheld": sum(1 for r in rows if r["withheld"])}
    result = {"run": str(run.folder), "variant": variant, "cases": rows, "bland_altman": stats,
              "targets": targets, "qc_check": qc_check(rows)}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "function_validation.json", result, allow_nan=False)
    write_text_atomic(out_dir / "function_validation.md", markdown(result))
    bland_altman_figure(rows, stats, out_dir / "bland_altman.png")
    return result
