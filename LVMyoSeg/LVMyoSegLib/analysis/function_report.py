"""Cardiac function of a segmented cine as the user gets it: values, slice decisions, QC,
and whether the values are withheld.

Function values are withheld (NaN in the dataclass, ``null`` in JSON, with the reason in
``withheld``) when they would be numbers without meaning:

- no myocardium or blood pool at all, or none on the ED frame (:mod:`cardiac_function`);
- a zero slice step (:mod:`cardiac_function`);
- every counted frame-slice flagged by quality control (:mod:`qc`);
- LV localisation found no circle of its own on any slice (every crop box is a guess).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..cine import Geometry
from ..errors import LabelError
from .cardiac_function import CardiacFunction, compute_cardiac_function
from .qc import quality_control


@dataclass(frozen=True)
class FunctionReport:
    """``function`` (None when nothing could be measured), ``qc`` (None then too), ``withheld``."""

    function: CardiacFunction | None
    qc: dict | None
    withheld: str | None

    def to_dict(self) -> dict:
        """Strict-JSON-ready ``{"cardiac_function", "qc", "function_withheld"}``."""
        return {"cardiac_function": None if self.function is None else self.function.to_dict(),
                "qc": self.qc, "function_withheld": self.withheld}


def withhold(function: CardiacFunction, reason: str) -> CardiacFunction:
    """``function`` with EDV, ESV, SV, EF, LV mass and cardiac output withheld for ``reason``."""
    nan = float("nan")
    reasons = "; ".join(r for r in (function.withheld, reason) if r)
    return dataclasses.replace(function, edv_ml=nan, esv_ml=nan, sv_ml=nan, ef_percent=nan,
                               lv_mass_g=nan, cardiac_output_l_min=nan, withheld=reasons)


def assess(label_map: np.ndarray, geometry: Geometry, trigger_times_ms: Sequence[float] | None = None,
           *, probabilities: np.ndarray | None = None, localisation_fallback: np.ndarray | None = None,
           rv_insertion: Sequence[float] | None = None,
           include: Mapping[tuple[int, int], bool] | None = None) -> FunctionReport:
    """Function, QC and withholding of one label map ``[T, Z, Y, X]`` (module docstring)."""
    try:
        function = compute_cardiac_function(label_map, geometry, trigger_times_ms,
                                            rv_insertion=rv_insertion, include=include)
    except LabelError as exc:
        return FunctionReport(None, None, str(exc))
    qc = quality_control(label_map, function, probabilities, localisation_fallback)
    if qc["all_flagged"]:
        function = withhold(function, f"quality control flags every counted slice "
                                      f"({qc['flagged_slices']} of {qc['counted_slices']})")
    if localisation_fallback is not None and np.asarray(localisation_fallback, bool).all():
        function = withhold(function, "LV localisation found the LV on no slice (every crop box "
                                      "is a guess from the image centre or the study axis)")
    return FunctionReport(function, qc, function.withheld)
