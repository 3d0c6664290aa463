"""Agreement of cardiac function from automatic segmentations with the expert contours.

For each case of a leave-one-out run (so every patient is unseen by its model), EDV, ESV
and EF are computed from the expert labels (cavity at ED and ES) and from the automatic
label map of the held-out case, on the same frames (the expert's ED and ES) and on the
same slices (those the expert contoured: the expert's slice coverage defines the LV
extent, so both volumes sum the same slices). Agreement is summarised per patient and as
a Bland–Altman analysis (mean difference, limits of agreement = mean ± 1.96 sd).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .cardiac_function import compute_cardiac_function
from .dataset import read_case
from .errors import InputError
from .labels import CHANNELS, Labels
from .sunnybrook import cardiac_phases


def compare_case(expert: Labels, auto: np.ndarray, geometry, case_id: str) -> dict[str, Any]:
    """Expert vs automatic EDV, ESV, EF (and LV mass at ED) for one case."""
    ed, es = cardiac_phases(expert)
    pool_known = expert.known[:, :, CHANNELS.index("blood_pool")]
    slices = np.flatnonzero(pool_known[ed] & pool_known[es])
    restricted = np.zeros_like(auto)
    for t in (ed, es):
        restricted[t, slices] = auto[t, slices]
    expert_lm = np.zeros_like(expert.label_map)
    for t in (ed, es):
        expert_lm[t, slices] = expert.label_map[t, slices]
    e = compute_cardiac_function(expert_lm, geometry, ed_frame=ed, es_frame=es)
    a = compute_cardiac_function(restricted, geometry, ed_frame=ed, es_frame=es)
    return {"case": case_id, "ed_frame": ed, "es_frame": es, "slices": slices.tolist(),
            "expert": {"edv_ml": e.edv_ml, "esv_ml": e.esv_ml, "ef_percent": e.ef_percent,
                       "lv_mass_g": e.lv_mass_g},
            "auto": {"edv_ml": a.edv_ml, "esv_ml": a.esv_ml, "ef_percent": a.ef_percent,
                     "lv_mass_g": a.lv_mass_g}}


def bland_altman(expert: np.ndarray, auto: np.ndarray) -> dict[str, float]:
    """Mean difference (auto - expert) and 95% limits of agreement."""
    d = np.asarray(auto, float) - np.asarray(expert, float)
    sd = float(d.std(ddof=1)) if d.size > 1 else float("nan")
    return {"mean_diff": float(d.mean()), "sd_diff": sd,
            "loa_low": float(d.mean() - 1.96 * sd), "loa_high": float(d.mean() + 1.96 * sd), "n": int(d.size)}


def validate_loo_run(run_dir: Path, dataset_dir: Path, out_dir: Path,
                     variant: str = "multi_level") -> dict[str, Any]:
    """Compare expert and automatic function for every finished fold; write JSON, Markdown, PNG."""
    from .figures import bland_altman_figure

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    settings = json.loads((run_dir / "settings.json").read_text())
    rows = []
    for case_id in settings["cases"]:
        pred = run_dir / f"fold_{case_id}" / f"labels_{variant}.npz"
        if not (run_dir / f"fold_{case_id}.json").is_file() or not pred.is_file():
            continue
        case = read_case(dataset_dir, case_id)
        rows.append(compare_case(case.labels, np.load(pred)["label_map"], case.cine.geometry, case_id))
    if not rows:
        raise InputError(f"{run_dir} has no finished fold with {variant} predictions.")
    stats = {k: bland_altman([r["expert"][k] for r in rows], [r["auto"][k] for r in rows])
             for k in ("edv_ml", "esv_ml", "ef_percent", "lv_mass_g")}
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"run": str(run_dir), "variant": variant, "cases": rows, "bland_altman": stats}
    (out_dir / "function_validation.json").write_text(json.dumps(result, indent=1))
    lines = ["| patient | EDV expert | EDV auto | ESV expert | ESV auto | EF expert | EF auto | ΔEF (points) | ΔEDV % | ΔESV % |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        e, a = r["expert"], r["auto"]
        lines.append(f"| {r['case']} | {e['edv_ml']:.1f} | {a['edv_ml']:.1f} | {e['esv_ml']:.1f} | "
                     f"{a['esv_ml']:.1f} | {e['ef_percent']:.1f} | {a['ef_percent']:.1f} | "
                     f"{a['ef_percent'] - e['ef_percent']:+.1f} | "
                     f"{100 * (a['edv_ml'] / e['edv_ml'] - 1):+.1f} | {100 * (a['esv_ml'] / e['esv_ml'] - 1):+.1f} |")
    lines += ["", "| quantity | mean difference (auto − expert) | limits of agreement |", "|---|---|---|"]
    for k, label in (("edv_ml", "EDV (mL)"), ("esv_ml", "ESV (mL)"), ("ef_percent", "EF (points)"),
                     ("lv_mass_g", "LV mass (g)")):
        s = stats[k]
        lines.append(f"| {label} | {s['mean_diff']:+.2f} | {s['loa_low']:+.2f} to {s['loa_high']:+.2f} |")
    (out_dir / "function_validation.md").write_text("\n".join(lines) + "\n")
    bland_altman_figure(rows, stats, out_dir / "bland_altman.png")
    return result
