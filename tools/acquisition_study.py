"""Cardiac function of one study under the acquisition conventions another centre may use
(issue 15): the product's EDV, ESV, EF and LV mass, with its own ED/ES frames and slice
choice, on the study as read and on variants of it:

- ``reversed``: slices stored apex-first instead of base-first (same physical placement);
- ``no_orientation``: an identity direction matrix and zero origin, as NIfTI exports that
  drop the patient orientation give (base and apex must then come from the images);
- ``no_orientation_reversed``: both of the above;
- ``thick_slices``: every other slice (twice the slice step);
- ``pixels_1.7mm``: in-plane pixels of 1.7 mm instead of ~1.37 mm (linear resampling);
- ``half_phases``: every other phase (a cine of half the temporal resolution).

The first three change nothing physical, so every figure must be the same; the last three
change the acquisition, so they show how much the figures move with it.

Usage: python tools/acquisition_study.py CINE [CINE ...] -o OUT.json [--model DIR]
           [--members N] [--rotations 1|2|4]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

from LVMyoSegLib.analysis.function_report import assess
from LVMyoSegLib.cine import Cine, Geometry
from LVMyoSegLib.io.readers import read_cine
from LVMyoSegLib.resources import bundled_model_dir
from LVMyoSegLib.segmentation.pipeline import segment_cine

COARSE_PIXEL_MM = 1.7


def _reversed(c: Cine) -> Cine:
    return Cine(c.frames[:, ::-1], c.geometry.reversed_slices(c.n_slices), c.trigger_times_ms, c.source)


def _no_orientation(c: Cine) -> Cine:
    return Cine(c.frames, Geometry(c.spacing, (0.0, 0.0, 0.0), np.eye(3)), c.trigger_times_ms, c.source)


def _thick_slices(c: Cine) -> Cine:
    g = c.geometry
    return Cine(c.frames[:, ::2], Geometry((g.spacing[0], g.spacing[1], 2 * g.spacing[2]), g.origin,
                                           g.direction), c.trigger_times_ms, c.source)


def _coarse_pixels(c: Cine) -> Cine:
    g = c.geometry
    zoom = (1, 1, g.spacing[1] / COARSE_PIXEL_MM, g.spacing[0] / COARSE_PIXEL_MM)
    frames = ndimage.zoom(c.frames, zoom, order=1).astype(np.float32)
    return Cine(frames, Geometry((COARSE_PIXEL_MM, COARSE_PIXEL_MM, g.spacing[2]), g.origin, g.direction),
                c.trigger_times_ms, c.source)


def _half_phases(c: Cine) -> Cine:
    return Cine(c.frames[::2], c.geometry, c.trigger_times_ms[::2], c.source)


VARIANTS: dict[str, Callable[[Cine], Cine]] = {
    "as_read": lambda c: c,
    "reversed": _reversed,
    "no_orientation": _no_orientation,
    "no_orientation_reversed": lambda c: _reversed(_no_orientation(c)),
    "thick_slices": _thick_slices,
    f"pixels_{COARSE_PIXEL_MM}mm": _coarse_pixels,
    "half_phases": _half_phases,
}


def _number(value: float) -> float | None:
    """A figure for strict JSON: None where it was withheld (NaN)."""
    return None if np.isnan(value) else float(value)


def study(cine: Cine, model_dir: Path, members: int | None, rotations: int | None) -> dict[str, dict]:
    """The function figures of every variant of ``cine`` (module docstring)."""
    out = {}
    for name, make in VARIANTS.items():
        variant = make(cine)
        t0 = time.perf_counter()
        result = segment_cine(variant, model_dir, members=members, rotations=rotations)
        loc = result.transform.localisation
        f = assess(result.label_map, variant.geometry, variant.trigger_times_ms,
                   probabilities=result.probabilities,
                   localisation_fallback=None if loc is None else loc.fallback).function
        decisions = f.slices
        out[name] = {**{k: _number(getattr(f, k)) for k in ("edv_ml", "esv_ml", "ef_percent", "lv_mass_g")},
                     "ed_frame": f.ed_frame, "es_frame": f.es_frame,
                     "slices_ed": decisions.counted_text(f.ed_frame),
                     "slices_es": decisions.counted_text(f.es_frame),
                     "order_source": decisions.order_source, "withheld": f.withheld,
                     "wall_s": round(time.perf_counter() - t0, 1)}
        print(f"{cine.source} {name}: EDV {f.edv_ml:.1f} ESV {f.esv_ml:.1f} EF {f.ef_percent:.1f} "
              f"mass {f.lv_mass_g:.1f} (ED {f.ed_frame}: {out[name]['slices_ed']}, "
              f"ES {f.es_frame}: {out[name]['slices_es']}, order {decisions.order_source})", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cines", nargs="+", type=Path)
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--members", type=int, default=None)
    ap.add_argument("--rotations", type=int, default=None)
    args = ap.parse_args()
    model_dir = args.model or bundled_model_dir()
    shown = model_dir.resolve()
    if shown.is_relative_to(Path.cwd()):
        shown = shown.relative_to(Path.cwd())
    results = {"model": str(shown), "members": args.members, "rotations": args.rotations,
               "studies": {}}
    for path in args.cines:
        results["studies"][path.name] = study(read_cine(path), model_dir, args.members, args.rotations)
        args.output.write_text(json.dumps(results, indent=2, allow_nan=False), encoding="utf-8")


if __name__ == "__main__":
    main()
