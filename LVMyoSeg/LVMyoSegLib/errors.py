"""The project's one error family.

Every message says what is wrong, with which file or node, and what to do.
"""

from __future__ import annotations


class LVMyoSegError(Exception):
    """Base class of every error LVMyoSeg raises on purpose."""


class InputError(LVMyoSegError):
    """An input file, folder or volume cannot be used as given."""


class GeometryError(InputError):
    """Frames, slices or labels whose geometry does not fit together."""


class LabelError(InputError):
    """Expert or user labels that are unreadable or inconsistent."""


class ModelError(LVMyoSegError):
    """A model bundle that is missing, damaged, tampered with or of an unknown format."""


class CancelledError(LVMyoSegError):
    """Long work (inference, training) stopped because the caller asked it to."""


EXIT_FUNCTION_WITHHELD = 3  # `lvmyoseg segment`: outputs written, function values withheld
