"""Atomic writes: a file or an output folder appears whole, or not at all."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary file path beside ``path`` (ending in ``suffix``, for writers that go by
    the extension); when the block succeeds it replaces ``path``, when it fails it is deleted."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(path: Path, data: Any, indent: int = 1) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file in the same folder."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=indent), encoding="utf-8")


@contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; when the block succeeds, its files are moved
    into ``out`` (created if needed); when it fails, they are deleted and ``out`` is untouched."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial.", dir=out.parent))
    try:
        yield staging
        out.mkdir(parents=True, exist_ok=True)
        for item in sorted(staging.iterdir()):
            os.replace(item, out / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
