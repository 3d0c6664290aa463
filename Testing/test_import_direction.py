"""The package's imports run one way, from the pipeline's start to its end (docs/ARCHITECTURE.md).

Every ``import`` in ``LVMyoSegLib`` (module level and inside functions) is read with ``ast``; a
module may import from its own stage and from earlier stages, never from a later one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "LVMyoSeg" / "LVMyoSegLib"

# The stages in pipeline order; the root package's modules (values, contracts, files) come first.
STAGES = ("", "io", "preprocessing", "model", "analysis", "reporting", "segmentation", "training",
          "cli", "mrml", "app")


def _stage(module: str) -> str:
    """The stage of a dotted module name under LVMyoSegLib ('' for the root package's modules)."""
    parts = module.split(".")
    return parts[0] if len(parts) > 1 or (LIB / parts[0]).is_dir() else ""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(LIB).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module under LVMyoSegLib) of every import of the package in one file."""
    module = _module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = [*base, *(node.module.split(".") if node.module else [])]
            elif node.module and node.module.split(".")[0] == "LVMyoSegLib":
                target = node.module.split(".")[1:]
            else:
                continue
            if target:
                found.append((node.lineno, ".".join(target)))
            else:  # from the root package import names: modules among them count
                found += [(node.lineno, a.name) for a in node.names if (LIB / f"{a.name}.py").is_file()
                          or (LIB / a.name).is_dir()]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".", 1)[1]) for a in node.names
                      if a.name.startswith("LVMyoSegLib.")]
    return found


def _violations() -> list[str]:
    out = []
    for path in sorted(LIB.rglob("*.py")):
        own = STAGES.index(_stage(_module_name(path) or "__init__"))
        for line, target in _imported(path):
            if STAGES.index(_stage(target)) > own:
                out.append(f"{path.relative_to(LIB)}:{line} imports {target} (stage "
                           f"{_stage(target)!r} comes after {STAGES[own]!r})")
    return out


def test_every_module_belongs_to_a_known_stage():
    for path in LIB.rglob("*.py"):
        assert _stage(_module_name(path) or "__init__") in STAGES, path


def test_imports_run_from_the_pipeline_start_to_its_end():
    assert _violations() == []


def test_the_check_sees_a_backward_import(tmp_path, monkeypatch):
    """The check itself can fail: an analysis module importing the command line is reported."""
    fake = tmp_path / "LVMyoSegLib"
    (fake / "analysis").mkdir(parents=True)
    (fake / "cli").mkdir()
    (fake / "analysis" / "bad.py").write_text("def f():\n    from ..cli import main\n")
    (fake / "cli" / "main.py").write_text("")
    monkeypatch.setattr(f"{__name__}.LIB", fake)
    assert _violations() == ["analysis/bad.py:2 imports cli (stage 'cli' comes after 'analysis')"]


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__]))
