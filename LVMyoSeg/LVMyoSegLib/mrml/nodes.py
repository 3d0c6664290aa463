"""What LVMyoSeg records on its nodes (reference roles, attributes), and adding nodes to a
scene and reading a sequence's data nodes, for the other modules of this package."""

from __future__ import annotations

import slicer

# Node reference roles and attributes set on a result segmentation sequence.
REF_CINE = "lvmyosegCine"
REF_MYOCARDIUM_PROBABILITY = "lvmyosegMyocardiumProbability"
REF_BLOOD_POOL_PROBABILITY = "lvmyosegBloodPoolProbability"
REF_VOLUMES_TABLE = "lvmyosegVolumesTable"
REF_THICKNESS_TABLE = "lvmyosegThicknessTable"
REF_RV_INSERTION = "lvmyosegRvInsertion"
REF_SLICES_TABLE = "lvmyosegSlicesTable"
REF_REVIEW_TABLE = "lvmyosegReviewTable"
ATTR_ROLE = "LVMyoSeg.Role"
ATTR_THRESHOLD = "LVMyoSeg.Threshold"
ATTR_THICKNESS_REFERENCE = "LVMyoSeg.ThicknessReference"  # "aha" or "relative"
ATTR_WITHHELD = "LVMyoSeg.FunctionWithheld"  # why the function values are withheld ("" if not)


def add_node(scene, class_name: str, name: str):
    """Add a new node of ``class_name`` named ``name`` (made unique) to ``scene``."""
    name = scene.GenerateUniqueName(name)
    node = scene.AddNewNodeByClass(class_name, name) if scene.IsNodeClassRegistered(class_name) else None
    if node is None:  # e.g. vtkMRMLSequenceBrowserNode in a scene without the Sequences logic
        node = getattr(slicer, class_name)()
        node.SetName(name)
        scene.AddNode(node)
    return node


def data_nodes(sequence_node) -> list:
    """The data nodes of a sequence node, in item order."""
    return [sequence_node.GetNthDataNode(i) for i in range(sequence_node.GetNumberOfDataNodes())]
