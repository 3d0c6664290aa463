"""What the Slicer modules use besides MRML: background jobs, Python package installs,
version checks, data folders, the parameter-node reactions and the export of a result.

Qt is passed in where needed (Slicer's PythonQt ``qt``; tests pass PySide6's ``QtCore``).
"""
