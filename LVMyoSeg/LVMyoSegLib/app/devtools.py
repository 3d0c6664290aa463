"""Developer actions of the Slicer modules: reload the Lib, run a module's self-test file."""

import importlib.util
import sys
from pathlib import Path


def forget_lib(package: str = "LVMyoSegLib") -> list:
    """Drop ``package`` and its submodules from ``sys.modules`` so that the next import reads the
    files again (the modules' Reload); returns their names."""
    names = [name for name in sys.modules if name == package or name.startswith(package + ".")]
    for name in names:
        del sys.modules[name]
    return names


def run_selftest_file(path: Path, class_name: str, msec: int = 100, **kwargs) -> None:
    """Reload and Test: run ``class_name().runTest()`` of the self-test file ``path``.

    The self-tests live in the module's ``Testing/Python`` folder (ctest runs them from there);
    they are in the source tree, not in an installed extension.
    """
    path = Path(path)
    if not path.is_file():
        raise AssertionError(f"No self-test at {path}: the self-tests are in the source tree "
                             "(add the source folder of the module to Slicer's module paths).")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    test = getattr(module, class_name)()
    test.messageDelay = msec
    test.runTest(**kwargs)
