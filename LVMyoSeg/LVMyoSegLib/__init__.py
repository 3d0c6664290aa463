"""LVMyoSeg computing core: readers, preprocessing, networks, training, metrics.

Importable without 3D Slicer or Qt. Only :mod:`LVMyoSegLib.mrml` imports MRML.
"""

__version__ = "0.1.0"
