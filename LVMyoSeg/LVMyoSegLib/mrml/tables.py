"""Table and plot nodes: columns of values as a vtkMRMLTableNode, a cardiac function's tables
(volumes, slices that count, QC review list, wall thickness) and the user's slice choices read
back, bar charts (LV Myocardium Trainer)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import slicer
import vtk

from ..errors import InputError
from .nodes import ATTR_ROLE, ATTR_THICKNESS_REFERENCE, ATTR_WITHHELD, add_node

if TYPE_CHECKING:
    from ..analysis.cardiac_function import CardiacFunction


def table_from_columns(scene, columns: dict, *, name: str = "LVMyoSeg table", units: dict | None = None,
                       descriptions: dict | None = None, table_node=None):
    """vtkMRMLTableNode holding ``columns`` (name -> equal-length values; str values -> a text column).

    ``units`` and ``descriptions`` map column names to their unit label and description. Pass
    ``table_node`` to refill an existing table.
    """
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise InputError(f"Table '{name}' columns have different lengths {sorted(lengths)}.")
    table = table_node if table_node is not None else add_node(scene, "vtkMRMLTableNode", name)
    was_modifying = table.StartModify()
    table.RemoveAllColumns()
    for column_name, values in columns.items():
        if any(isinstance(v, str) for v in values):
            array = vtk.vtkStringArray()
            for v in values:
                array.InsertNextValue(str(v))
        else:
            array = vtk.vtkDoubleArray()
            for v in values:
                array.InsertNextValue(float(v))
        array.SetName(column_name)
        table.AddColumn(array)
        if units and units.get(column_name):
            table.SetColumnUnitLabel(column_name, units[column_name])
        if descriptions and descriptions.get(column_name):
            table.SetColumnDescription(column_name, descriptions[column_name])
    table.EndModify(was_modifying)
    return table


def table_columns(table, names: Sequence[str], kind: str) -> dict:
    """The columns ``names`` (name -> vtkAbstractArray) of a table this package wrote as an LV
    ``kind`` table; refuses a table that lacks any of them."""
    vtable = table.GetTable()
    columns = {name: vtable.GetColumnByName(name) for name in names}
    missing = [name for name, column in columns.items() if column is None]
    if missing:
        raise InputError(f"Table '{table.GetName()}' has no column(s) {missing}; it is not an LV {kind} "
                         "table. Recompute the cardiac function to rebuild it.")
    return columns


def volumes_table(scene, function: CardiacFunction, *, name: str = "LV volumes", table_node=None):
    """vtkMRMLTableNode with one row per frame: time, LV cavity and myocardium volumes (mL).

    ``function`` is the cine's computed cardiac function; its global values (EDV/ESV/SV/EF, LV
    mass, ED and ES frames) are stored as table attributes ``LVMyoSeg.<name>``. Pass
    ``table_node`` to refill an existing table (threshold change).
    """
    from ..analysis.cardiac_function import MYOCARDIAL_DENSITY_G_PER_ML

    myocardium = np.asarray(function.myocardium_volume_ml, dtype=np.float64)
    n = myocardium.shape[0]
    times = np.arange(n, dtype=np.float64) if function.trigger_times_ms is None else function.trigger_times_ms
    columns = {
        "frame": np.arange(n, dtype=np.float64),
        "time": times,
        "cavity_volume": function.blood_volume_ml,
        "myocardium_volume": myocardium,
        "myocardium_mass": myocardium * MYOCARDIAL_DENSITY_G_PER_ML,
    }
    units = {"time": "ms", "cavity_volume": "mL", "myocardium_volume": "mL", "myocardium_mass": "g"}
    descriptions = {
        "frame": "Frame number (0-based)",
        "time": "Trigger time",
        "cavity_volume": "LV cavity (blood pool, papillary muscles included) volume",
        "myocardium_volume": "LV myocardium volume",
        "myocardium_mass": f"LV myocardium mass (volume x {MYOCARDIAL_DENSITY_G_PER_ML} g/mL)",
    }
    if function.slices is not None:
        columns["counted_slices"] = [function.slices.counted_text(t) for t in range(n)]
        descriptions["counted_slices"] = ("Slices counted in the volumes of this frame (base, atrium and "
                                          "outflow tract excluded; reasons in the slices table)")
    table = table_from_columns(scene, columns, name=name, units=units, descriptions=descriptions,
                               table_node=table_node)
    table.SetAttribute(ATTR_ROLE, "volumes")
    for key, value in (("EDV_mL", function.edv_ml), ("ESV_mL", function.esv_ml), ("SV_mL", function.sv_ml),
                       ("EF_percent", function.ef_percent), ("LVMass_g", function.lv_mass_g),
                       ("EDFrame", function.ed_frame), ("ESFrame", function.es_frame)):
        table.SetAttribute(f"LVMyoSeg.{key}", f"{value:.6g}")
    table.SetAttribute(ATTR_WITHHELD, function.withheld or "")
    return table


def slices_table(scene, function: CardiacFunction, qc: dict | None = None, *, name: str = "LV slices",
                 table_node=None):
    """vtkMRMLTableNode with one row per frame and slice holding LV labels: whether it counts
    in the volumes (``counted``, 1/0: edit it and recompute to include or exclude a slice),
    the rule's own decision (``rule_counted``), the reason, the myocardial coverage of the
    blood pool, the slice's cavity and myocardium volumes and its QC score."""
    d = function.slices
    scores = {} if qc is None else {(r["frame"], r["slice"]): r["score"] for r in qc["slices"]}
    lv = (function.slice_blood_ml + function.slice_myocardium_ml) > 0
    rows = [(t, z) for t in range(lv.shape[0]) for z in range(lv.shape[1]) if lv[t, z] or d.by_user[t, z]]
    rule = d.counted ^ d.by_user  # what the rules alone decided
    columns = {
        "frame": [t for t, _ in rows],
        "slice": [z for _, z in rows],
        "counted": [int(d.counted[t, z]) for t, z in rows],
        "rule_counted": [int(rule[t, z]) for t, z in rows],
        "reason": [d.reasons[t][z] for t, z in rows],
        "coverage": [100.0 * d.coverage[t, z] for t, z in rows],
        "cavity_volume": [function.slice_blood_ml[t, z] for t, z in rows],
        "myocardium_volume": [function.slice_myocardium_ml[t, z] for t, z in rows],
        "qc_score": [scores.get((t, z), 0.0) for t, z in rows],
    }
    table = table_from_columns(scene, columns, name=name, table_node=table_node,
                               units={"coverage": "%", "cavity_volume": "mL", "myocardium_volume": "mL"})
    table.SetAttribute(ATTR_ROLE, "slices")
    return table


def slice_choices(table) -> dict[tuple[int, int], bool]:
    """The user's slice choices ``{(frame, slice): counted}`` from a :func:`slices_table`: the
    rows whose ``counted`` differs from the rule's decision."""
    cols = table_columns(table, ("frame", "slice", "counted", "rule_counted"), "slices")
    out = {}
    for i in range(table.GetTable().GetNumberOfRows()):
        values = {c: a.GetVariantValue(i).ToDouble() for c, a in cols.items()}
        counted = values["counted"] >= 0.5
        if counted != (values["rule_counted"] >= 0.5):
            out[(int(values["frame"]), int(values["slice"]))] = counted
    return out


def review_table(scene, qc: dict, *, name: str = "LV review first", table_node=None):
    """vtkMRMLTableNode of QC's "review these frames first" list: rank, frame, slice, score, why."""
    rows = qc["review_first"] if qc else []
    columns = {"rank": [i + 1 for i in range(len(rows))], "frame": [r["frame"] for r in rows],
               "slice": [r["slice"] for r in rows], "score": [r["score"] for r in rows],
               "why": [r["why"] for r in rows]}
    table = table_from_columns(scene, columns, name=name, table_node=table_node)
    table.SetAttribute(ATTR_ROLE, "review")
    return table


def thickness_table(scene, function: CardiacFunction, *, name: str = "LV wall thickness", table_node=None):
    """vtkMRMLTableNode of wall thickness at ED and ES: one row per slice and sector.

    The "segment" column holds AHA segment numbers when ``function`` was computed with an RV
    insertion point, else "relative" (sectors counted from the image +column direction); the
    table attribute ``LVMyoSeg.ThicknessReference`` says which.
    """
    phase = {function.ed_frame: "ED", function.es_frame: "ES"}
    rows = [(s, sec) for s in function.thickness for sec in s.sectors]
    columns = {
        "phase": [phase[s.frame] for s, _ in rows],  # thickness is measured at ED and ES only
        "frame": [s.frame for s, _ in rows],
        "slice": [s.slice for s, _ in rows],
        "level": [s.level or "" for s, _ in rows],
        "sector": [sec.sector for _, sec in rows],
        "segment": [str(sec.aha_segment) if sec.aha_segment is not None else "relative" for _, sec in rows],
        "thickness_mean": [sec.mean_mm for _, sec in rows],
        "thickness_min": [sec.min_mm for _, sec in rows],
        "thickness_max": [sec.max_mm for _, sec in rows],
    }
    table = table_from_columns(scene, columns, name=name, table_node=table_node,
                               units={k: "mm" for k in ("thickness_mean", "thickness_min", "thickness_max")})
    table.SetAttribute(ATTR_ROLE, "thickness")
    table.SetAttribute(ATTR_THICKNESS_REFERENCE, function.thickness_reference)
    return table


def bar_chart(scene, table, y_columns: Sequence[str], *, label_column: str, name: str, title: str,
              y_title: str, colors: Sequence[tuple[float, float, float]] | None = None):
    """vtkMRMLPlotChartNode with one bar series per column of ``table`` (x = row, labels from ``label_column``)."""
    chart = add_node(scene, "vtkMRMLPlotChartNode", name)
    for i, column in enumerate(y_columns):
        if table.GetTable().GetColumnByName(column) is None:
            raise InputError(f"Table '{table.GetName()}' has no column '{column}' to plot.")
        series = add_node(scene, "vtkMRMLPlotSeriesNode", f"{name} {column}")
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeBar)
        series.SetYColumnName(column)
        series.SetLabelColumnName(label_column)
        if colors:
            series.SetColor(*colors[i % len(colors)])
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    chart.SetTitle(title)
    chart.SetXAxisTitle(label_column)
    chart.SetYAxisTitle(y_title)
    return chart
