"""The ``lvmyoseg`` command line (``python -m LVMyoSegLib.cli``).
"""
