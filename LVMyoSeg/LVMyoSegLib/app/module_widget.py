"""What both module widgets share: the panel (or, on an unsupported Slicer, the message alone),
the parameter node's connection to the GUI, scene close, enter/exit and the developer Reload that
re-imports the Lib. Must stay importable on Python 3.9 (the module files need it to load there).
"""

from typing import Optional

from .compat import show_unsupported
from .devtools import forget_lib


class ModuleWidgetBase:
    """Mixin listed before ``ScriptedLoadableModuleWidget`` and ``VTKObservationMixin``.

    The widget sets :attr:`unsupported` (None or the message), calls :meth:`loadPanel` in
    ``setup``, and defines ``initializeParameterNode`` (which sets ``self.logic``'s node) and
    ``onParameterNodeModified`` (called on every parameter-node change and once when the node is
    set). ``parameterNodeSet`` is a hook run before that first call.
    """

    unsupported: Optional[str] = None
    logic = None
    _parameterNode = None
    _parameterNodeGuiTag = None

    def loadPanel(self, slicer, qt, ui_path: str) -> bool:
        """Load the ``.ui`` panel and watch scene closes; False (message shown) on an unsupported Slicer."""
        if self.unsupported:
            show_unsupported(qt, self.layout, self.unsupported)
            return False
        panel = slicer.util.loadUI(ui_path)
        self.layout.addWidget(panel)
        self.ui = slicer.util.childWidgetVariables(panel)
        panel.setMRMLScene(slicer.mrmlScene)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        return True

    def cleanup(self) -> None:
        if self.logic:
            self.logic.cancel()
        self.removeObservers()

    def enter(self) -> None:
        if not self.unsupported:
            self.initializeParameterNode()

    def exit(self) -> None:
        if not self.unsupported:
            self.setParameterNode(None)  # enter() connects it again

    def onReload(self) -> None:
        """Developer reload: the Lib's files are read again too, not only the module file."""
        forget_lib()
        super().onReload()

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def parameterNodeSet(self) -> None:
        """Hook: the parameter node has just been replaced (before it is connected)."""

    def setParameterNode(self, node) -> None:
        import vtk  # the MRML/VTK side is loaded only where the module is supported

        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = node
        self.parameterNodeSet()
        if node:
            self._parameterNodeGuiTag = node.connectGui(self.ui)
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self.onParameterNodeModified()
