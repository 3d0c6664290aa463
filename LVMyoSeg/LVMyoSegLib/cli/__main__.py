"""``python -m LVMyoSegLib.cli``: the ``lvmyoseg`` command (how the Slicer modules run it)."""

import sys

from .main import main

sys.exit(main())
