"""Quality control per slice and phase: a score per frame-slice and "review these frames first".

Signals, each scaled to 0..1 (1: clearly suspicious); the score of a frame-slice is their sum:

- ``uncertain``: ensemble disagreement / network doubt: the pixels whose myocardium or
  blood-pool probability lies between 0.2 and 0.8, as a share of the slice's LV pixels
  (myocardium + blood pool); 0 at a share of 0.25 (a clean slice's boundary band), 1 at 0.5.
  Needs the probabilities; absent without them.
- ``open_ring``: the myocardium does not enclose the blood pool (coverage < 1, see
  :mod:`LVMyoSegLib.analysis.slice_selection`): 1 - coverage, x2, capped at 1.
- ``cycle_jump``: the cavity or myocardium area differs from the mean of the slice's two
  neighbouring frames (the cycle is periodic) by ``d`` (share of that mean, the larger of
  the two areas' ``d``); 0 at 10%, 1 at 40%.
- ``stack_jump``: the same against the mean of the two neighbouring slices of the frame
  (inner LV slices only); 0 at 30%, 1 at 80% (the LV tapers towards base and apex).
- ``myocardium_volume``: myocardium is incompressible, so the counted myocardial volume of
  a frame should stay within ~10% of ED's. A frame beyond that passes 0 (10%) .. 1 (20%)
  on to its slices, in proportion to each slice's share of the area change.
- ``localisation_fallback``: 0.5 on every frame of a slice whose LV localisation found no
  circle of its own (the crop box came from the study's LV axis).
- ``small_section``: the slice's LV area (myocardium + blood pool) as a share of the frame's
  largest counted slice; 0 at a share of 0.5, 1 at 0.2. Near the apex the wall is cut
  obliquely and a small section turns a pixel of boundary error into a large DSC loss. Set on
  the cross-validation of the 30 ED/ES patients without a cine (``tools/qc_section_study.py``):
  ED slices whose expert section was under half the largest were 19% of the slices and 69% of
  the worst 10% by DSC.
- ``stack_end``: 0.5 on the basal-most and the apical-most counted slice of each frame. At
  the base the myocardium thins out into the outflow tract and the slice decision is made;
  at the apex the wall is cut obliquely (partial volume). Both are where the model's DSC is
  lowest (the base/apex rows of the leave-one-out and cross-validation tables, docs/RESULTS.md).

Only counted slices (those in the volumes) are ranked. ``review_first`` lists up to
``n_review`` frame-slices with a score of at least ``min_review_score``, at most
``per_slice_max`` per slice (so one bad slice does not fill the list), each with the
signals above 0.3 as its reason. It ranks by consequence: a frame-slice of the ED or the ES
frame, whose error changes EDV, ESV, EF and LV mass, counts with twice its score (``priority``);
elsewhere an error changes only the volume curve. A frame-slice is *flagged* at a score >= 1.
"""

from __future__ import annotations

import math

import numpy as np

from .cardiac_function import CardiacFunction

SIGNALS = ("uncertain", "open_ring", "cycle_jump", "stack_jump", "myocardium_volume",
           "localisation_fallback", "small_section", "stack_end")
FLAG_SCORE = 1.0
FIGURE_FRAMES_WEIGHT = 2.0  # review priority of the ED and ES frames' slices (module docstring)


def _ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((np.nan_to_num(np.asarray(x, float), nan=0.0) - lo) / (hi - lo), 0.0, 1.0)


def _rel_dev(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.abs(a - ref) / np.maximum(ref, 1.0)


def quality_control(label_map: np.ndarray, function: CardiacFunction,
                    probabilities: np.ndarray | None = None,
                    localisation_fallback: np.ndarray | None = None,
                    n_review: int = 10, min_review_score: float = 0.5, per_slice_max: int = 2) -> dict:
    """QC of one segmented cine (module docstring); a JSON-ready dict.

    ``function`` is the :class:`CardiacFunction` of ``label_map`` (its slice decisions and
    per-slice areas); ``probabilities`` ``[T, Z, Y, X, 2]``; ``localisation_fallback`` ``[Z]``.
    """
    lm = np.asarray(label_map)
    n_t, n_z = lm.shape[:2]
    decisions = function.slices
    counted = decisions.counted
    pool_a = np.asarray(function.slice_blood_ml, float)  # slice volumes: areas x one constant
    myo_a = np.asarray(function.slice_myocardium_ml, float)
    lv = (pool_a + myo_a) > 0
    sig = {name: np.zeros((n_t, n_z)) for name in SIGNALS}

    if probabilities is not None:
        p = np.asarray(probabilities)
        doubt = ((p > 0.2) & (p < 0.8)).any(axis=-1).sum(axis=(2, 3))
        lv_px = np.maximum((lm > 0).sum(axis=(2, 3)), 1)
        sig["uncertain"] = _ramp(doubt / lv_px, 0.25, 0.5) * lv
    sig["open_ring"] = np.clip(2.0 * (1.0 - np.nan_to_num(decisions.coverage, nan=1.0)), 0, 1)

    labelled = lm.reshape(n_t, -1).any(axis=1)
    if n_t >= 3 and labelled.all():
        jumps = [_rel_dev(a, (np.roll(a, 1, axis=0) + np.roll(a, -1, axis=0)) / 2) for a in (pool_a, myo_a)]
        sig["cycle_jump"] = _ramp(np.maximum(*jumps), 0.1, 0.4) * lv
    if n_z >= 3:
        inner = np.zeros((n_t, n_z), bool)
        inner[:, 1:-1] = lv[:, :-2] & lv[:, 1:-1] & lv[:, 2:]
        jumps = []
        for a in (pool_a, myo_a):
            ref = np.zeros_like(a)
            ref[:, 1:-1] = (a[:, :-2] + a[:, 2:]) / 2
            jumps.append(_rel_dev(a, ref))
        sig["stack_jump"] = _ramp(np.maximum(*jumps), 0.3, 0.8) * inner

    ed = function.ed_frame
    myo_counted = myo_a * counted
    v_ed = myo_counted[ed].sum()
    change = np.full(n_t, np.nan)
    if v_ed > 0:
        change = np.where(labelled, np.abs(myo_counted.sum(axis=1) - v_ed) / v_ed, np.nan)
        delta = np.abs(myo_counted - myo_counted[ed])
        share = delta / np.maximum(delta.max(axis=1, keepdims=True), 1e-12)
        sig["myocardium_volume"] = _ramp(change, 0.1, 0.2)[:, None] * share
    if localisation_fallback is not None:
        fb = np.asarray(localisation_fallback, bool).reshape(-1)
        if fb.size == n_z:
            sig["localisation_fallback"] = 0.5 * np.broadcast_to(fb, (n_t, n_z)) * lv
    section = pool_a + myo_a
    largest = np.where(counted, section, 0.0).max(axis=1, keepdims=True)
    share = np.divide(section, largest, out=np.ones_like(section), where=largest > 0)
    sig["small_section"] = _ramp(0.5 - share, 0.0, 0.3) * lv
    order = np.asarray(decisions.base_to_apex, int)
    for t in range(n_t):
        along = order[counted[t, order]]
        if along.size:
            sig["stack_end"][t, [along[0], along[-1]]] = 0.5

    score = sum(sig.values())
    score = np.where(lv, score, 0.0)
    rows = []
    for t in range(n_t):
        for z in range(n_z):
            if lv[t, z]:
                rows.append({"frame": t, "slice": z, "counted": bool(counted[t, z]),
                             "score": round(float(score[t, z]), 3),
                             "signals": {k: round(float(v[t, z]), 3) for k, v in sig.items()}})
    figure_frames = {function.ed_frame, function.es_frame}

    def priority(r: dict) -> float:
        return round(r["score"] * (FIGURE_FRAMES_WEIGHT if r["frame"] in figure_frames else 1.0), 3)

    ranked, per_slice = [], {}
    for r in sorted((r for r in rows if r["counted"] and r["score"] >= min_review_score),
                    key=lambda r: -priority(r)):
        if per_slice.get(r["slice"], 0) < per_slice_max and len(ranked) < n_review:
            ranked.append(r)
            per_slice[r["slice"]] = per_slice.get(r["slice"], 0) + 1
    review = [{"frame": r["frame"], "slice": r["slice"], "score": r["score"], "priority": priority(r),
               "why": ", ".join(k.replace("_", " ") for k, v in
                                sorted(r["signals"].items(), key=lambda kv: -kv[1]) if v >= 0.3)}
              for r in ranked]
    n_counted = int(counted.sum())
    n_flagged = int((counted & (score >= FLAG_SCORE)).sum())
    return {
        "signals": list(SIGNALS),
        "frame_scores": [round(float(score[t][counted[t]].max()), 3) if counted[t].any() else None
                         for t in range(n_t)],
        "myocardium_change_vs_ed": [None if not math.isfinite(c) else round(float(c), 4) for c in change],
        "slices": rows,
        "review_first": review,
        "counted_slices": n_counted,
        "flagged_slices": n_flagged,
        "all_flagged": bool(n_counted > 0 and n_flagged == n_counted),
    }


def score_array(qc: dict, shape_tz: tuple[int, int]) -> np.ndarray:
    """``[T, Z]`` QC scores from a :func:`quality_control` dict (0 where the slice holds no LV)."""
    out = np.zeros(shape_tz)
    for r in qc["slices"]:
        out[r["frame"], r["slice"]] = r["score"]
    return out

