"""The model commands: ``export-onnx``; which model ``--init`` and ``--registry`` name."""

from __future__ import annotations

import argparse
from pathlib import Path


def registry_dir(args: argparse.Namespace) -> Path:
    """The registry folder of ``--registry``, or the default one."""
    from ..model.registry import default_registry_dir

    return Path(args.registry) if getattr(args, "registry", None) else default_registry_dir()


def init_bundle(value: str | None, registry: Path | None = None) -> Path | None:
    """The bundle folder ``--init`` names (a registered id, 'bundled' or a folder); None for 'scratch'."""
    from ..model.registry import resolve

    if value in (None, "scratch"):
        return None
    return resolve(value, registry)


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from ..model.bundle import add_onnx_members

    add_onnx_members(Path(args.bundle), Path(args.output))
    print(f"wrote model bundle {args.output} (the members of {args.bundle}, stored compact, and their ONNX members)")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-onnx", help="copy a model bundle written without ONNX members and add them "
                                           "(needs the training requirements)")
    p.add_argument("bundle", help="model bundle folder")
    p.add_argument("-o", "--output", required=True, help="new model bundle folder (never overwritten)")
    p.set_defaults(func=cmd_export_onnx)
