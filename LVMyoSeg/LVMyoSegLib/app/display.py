"""Showing results in 3D Slicer's views (``slicer`` is passed in: these need the application)."""

from __future__ import annotations

from .. import mrml

COLD_TO_HOT = "vtkMRMLColorTableNodeFileColdToHotRainbow.txt"
CHART_COLORS = ((0.55, 0.55, 0.55), (0.85, 0.2, 0.2), (0.2, 0.45, 0.85), (0.2, 0.65, 0.3))


def show_segmentation(slicer, nodes, table=None) -> None:
    """Show the cine with the segmentation outlines and the probability maps, and the cavity volume curve."""
    scene = slicer.mrmlScene
    slicer.modules.sequences.logic().UpdateProxyNodesFromSequences(nodes.browser)
    cine_proxy = nodes.browser.GetProxyNode(nodes.browser.GetMasterSequenceNode())
    seg_proxy = nodes.browser.GetProxyNode(nodes.segmentation)
    if seg_proxy is not None:
        seg_proxy.CreateDefaultDisplayNodes()
    for sequence in (nodes.myocardium_probability, nodes.blood_pool_probability):
        proxy = nodes.browser.GetProxyNode(sequence)
        if proxy is None:
            continue
        proxy.CreateDefaultDisplayNodes()
        display = proxy.GetDisplayNode()
        display.SetAutoWindowLevel(False)
        display.SetWindowLevelMinMax(0.0, 1.0)
        if scene.GetNodeByID(COLD_TO_HOT):
            display.SetAndObserveColorNodeID(COLD_TO_HOT)
    if cine_proxy is not None:
        slicer.util.setSliceViewerLayers(background=cine_proxy, fit=True)
    toolbar = getattr(slicer.modules.sequences, "setToolBarActiveBrowserNode", None)
    if toolbar:
        toolbar(nodes.browser)
    if table is None or slicer.app.layoutManager() is None:
        return
    series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{table.GetName()} cavity")
    series.SetAndObserveTableNodeID(table.GetID())
    series.SetXColumnName("time")
    series.SetYColumnName("cavity_volume")
    series.SetPlotType(series.PlotTypeScatter)
    series.SetColor(*mrml.BLOOD_POOL_SEGMENT.color)
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{table.GetName()} chart")
    chart.AddAndObservePlotSeriesNodeID(series.GetID())
    chart.SetTitle("LV cavity volume")
    chart.SetXAxisTitle("time (ms)")
    chart.SetYAxisTitle("volume (mL)")
    slicer.modules.plots.logic().ShowChartInLayout(chart)


def show_loo_results(slicer, loo_results: dict, name: str = "LOO results"):
    """Add the per-case leave-one-out table (before vs after) and a DSC bar chart; show them.
    Returns (table, chart)."""
    from .retraining import loo_table_columns

    scene = slicer.mrmlScene
    columns, units = loo_table_columns(loo_results)
    table = mrml.table_from_columns(scene, columns, name=name, units=units)
    dsc_columns = [c for c in columns if c.startswith("DSC ")]
    chart = mrml.bar_chart(scene, table, dsc_columns, label_column="case", name=f"{name} chart",
                           title="Held-out myocardium DSC", y_title="DSC", colors=CHART_COLORS)
    if slicer.app.layoutManager() is not None:
        slicer.modules.plots.logic().ShowChartInLayout(chart)
        slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(table.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()
    return table, chart
