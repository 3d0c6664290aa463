"""Files and folders that appear whole, or not at all; JSON files read with a clear refusal.

- :func:`atomic_path`: one file written through a temporary file beside it.
- :func:`atomic_folder`: a new folder (a model bundle, a dataset case) filled beside its place
  and renamed into it.
- :func:`output_folder`: an output folder as a unit. It is checked and locked before any
  work starts, filled in a hidden staging folder beside it and swapped into place with one
  rename. A non-empty folder that is not an untouched earlier LVMyoSeg result is refused
  unless the caller allows overwriting; an existing folder is replaced whole, never merged
  into. Every output gets the permissions the user's umask gives (not 0600/0700).
  :func:`check_output_folder` makes the same checks up front, e.g. for every case of a cohort.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import InputError

MARKER_NAME = ".lvmyoseg-output.json"  # in every output folder: who wrote it, and each file's hash
_STAGING = ".lvmyoseg-staging."  # hidden siblings: .NAME.lvmyoseg-staging.XXXX
_OLD = ".lvmyoseg-old."  # the replaced folder, for the moment of a two-rename swap
_LOCK = ".lvmyoseg-lock"
_LEGACY_PARTIAL = ".partial."  # staging folders of earlier versions: .NAME.partial.XXXX
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EROFS, getattr(errno, "EDQUOT", errno.ENOSPC)}
_FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def umask() -> int:
    """The process's umask (read without changing it where the system allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(folder: bool = False) -> int:
    """Permissions a new file (0666) or folder (0777) gets under the umask, as `touch`/`mkdir` give."""
    return (0o777 if folder else 0o666) & ~umask()


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """A new uniquely named folder in ``parent`` with the umask's permissions (``mkdtemp`` gives 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(path, default_mode(folder=True))
    return path


@contextmanager
def atomic_path(path: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary file path beside ``path`` (ending in ``suffix``, for writers that go by
    the extension); when the block succeeds it replaces ``path``, when it fails it is deleted."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield a new empty folder beside ``path`` (its parents are made) to fill; when the block
    succeeds it is renamed to ``path``, which must not exist yet; when it fails it is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = make_temp_dir(path.parent, f".{path.name}.")
    try:
        yield staging
        os.rename(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: Path, data: Any, indent: int = 1, allow_nan: bool = True) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file in the same folder
    (``allow_nan=False``: refuse NaN and infinities, which strict JSON readers cannot read)."""
    write_text_atomic(path, json.dumps(data, indent=indent, allow_nan=allow_nan))


def read_json(path: Path, fix: str) -> Any:
    """The JSON value in ``path``; :class:`InputError` naming the file and ``fix`` (what to do)
    when it is missing, unreadable or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problem = "does not exist"
    except OSError as exc:
        problem = f"cannot be read ({exc.strerror or exc})"
    except ValueError as exc:  # not UTF-8 text, or not JSON
        problem = f"is not valid JSON ({exc})"
    raise InputError(f"{path} {problem}. {fix}")


def is_folder_name(name: str) -> bool:
    """Whether ``name`` can name a case or model folder: 1-100 letters, digits, '.', '_' or '-',
    starting with a letter or digit."""
    return bool(_FOLDER_NAME.match(name or ""))


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _output_error(out: Path, what: str, exc: OSError) -> InputError:
    reason = exc.strerror or str(exc)
    return InputError(f"Cannot {what} the output folder {out}: {reason}. Choose a folder you can write to "
                      "(-o) on a disk with free space.")


def resolve_output(out: Path) -> Path:
    """The real folder ``out`` names (a symlink is followed), after checking it can be one.

    Raises :class:`InputError` for an existing file, a parent that is a file, a dangling
    symlink, or a parent folder that cannot be created.
    """
    out = Path(out).expanduser()
    if out.is_symlink() and not out.exists():
        raise InputError(f"The output folder {out} is a symlink to {os.readlink(out)}, which does not exist. "
                         "Create that folder or give another output folder (-o).")
    real = Path(os.path.realpath(out))
    if real.exists() and not real.is_dir():
        raise InputError(f"The output path {out} is an existing file, not a folder. Give a folder (-o).")
    for parent in real.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"The output folder {out} cannot be created: {parent} is a file. "
                                 "Give a folder path (-o).")
            break
    return real


def _previous_result_problem(folder: Path) -> str:
    """Why ``folder`` is not an untouched earlier LVMyoSeg result ("" when it is one, or empty)."""
    try:
        entries = sorted(p.name for p in folder.iterdir())
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    if not entries:
        return ""
    marker = folder / MARKER_NAME
    try:
        written = json.loads(marker.read_text(encoding="utf-8"))["files"]
        assert isinstance(written, dict)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        return f"it holds files LVMyoSeg did not write ({shown})"
    extra = [e for e in entries if e != MARKER_NAME and e not in written]
    if extra:
        return f"it holds files added after LVMyoSeg wrote it ({', '.join(extra[:5])})"
    for name, digest in written.items():
        path = folder / name
        if not path.is_file() or sha256_file(path) != digest:
            return f"{name} was changed or removed after LVMyoSeg wrote it"
    return ""


class _Lock:
    """An exclusive, non-blocking lock on ``path`` held by this process (released when it ends)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh = None

    def acquire(self) -> bool:
        while True:
            fh = open(self.path, "a+b")
            try:
                if sys.platform == "win32":
                    import msvcrt

                    fh.seek(0)
                    msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
                else:
                    import fcntl

                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                return False
            try:  # the holder before us may have removed the file after we opened it: lock the new one
                same = os.path.samestat(os.fstat(fh.fileno()), os.stat(self.path))
            except OSError:
                same = False
            if same:
                self.fh = fh
                return True
            fh.close()

    def release(self) -> None:
        if self.fh is None:
            return
        if sys.platform != "win32":  # removed while held, so no one can lock a stale file
            try:
                os.unlink(self.path)
            except OSError:
                pass
        self.fh.close()
        self.fh = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return result == 0


def _clean_stale(real: Path) -> None:
    """Remove staging folders that interrupted runs left beside ``real``; put back a folder that a
    run killed between the two renames of a swap had moved aside (we hold the lock: none is live)."""
    prefix = f".{real.name}"
    olds = []
    for sibling in real.parent.iterdir():
        name = sibling.name
        if not name.startswith(prefix) or not sibling.is_dir() or sibling.is_symlink():
            continue
        rest = name[len(prefix):]
        if rest.startswith((_STAGING, _LEGACY_PARTIAL)):
            shutil.rmtree(sibling, ignore_errors=True)
        elif rest.startswith(_OLD):
            olds.append(sibling)
    for old in olds:
        if not real.exists():
            os.rename(old, real)
        else:
            shutil.rmtree(old, ignore_errors=True)


def check_output_folder(out: Path, *, overwrite: bool = False, protect: Iterable[Path] = ()) -> Path:
    """The real folder ``out`` names, after the checks :func:`output_folder` makes on entry (without
    locking it): lets a caller with many outputs (a cohort) refuse a bad one before any work.
    Raises :class:`InputError`."""
    real = resolve_output(out)
    for path in protect:
        path = Path(os.path.realpath(path))
        if path == real or real in path.parents:
            raise InputError(f"The output folder {out} holds the input {path}; writing there would replace "
                             "it. Give a separate output folder (-o).")
    if real.is_dir() and overwrite:
        try:
            folders = sorted(p.name for p in real.iterdir() if p.is_dir() and not p.is_symlink())
        except OSError as exc:
            raise _output_error(out, "read", exc) from None
        if folders:  # e.g. `-o . --overwrite` in a home or dataset folder
            raise InputError(f"The output folder {out} holds folders ({', '.join(folders[:5])}); --overwrite "
                             "replaces only a folder of files, such as an earlier result. Give the result "
                             "folder itself, or a new one (-o).")
    if real.is_dir() and not overwrite:
        problem = _previous_result_problem(real)
        if problem:
            raise InputError(f"The output folder {out} is not empty and is not an earlier LVMyoSeg result: "
                             f"{problem}. Nothing was written. Give an empty or new folder (-o), or add "
                             "--overwrite to replace the whole folder.")
    return real


@contextmanager
def output_folder(out: Path, *, overwrite: bool = False, written_by: str = "lvmyoseg",
                  protect: Iterable[Path] = ()) -> Iterator[Path]:
    """Make ``out`` one unit of output: yields an empty staging folder to fill; when the block
    succeeds the staging folder becomes ``out`` in one rename, replacing any earlier folder whole.

    On entry, before the caller's work: ``out`` is checked (:func:`resolve_output`; a non-empty
    folder must be an untouched earlier LVMyoSeg result unless ``overwrite``), locked against
    other runs (a second run is refused at once), and stale staging folders are removed. When
    the block fails or is interrupted, the staging folder is deleted and ``out`` is unchanged.
    A symlinked ``out`` keeps its link; the folder it points to is replaced. The folder gets a
    marker file (:data:`MARKER_NAME`) with each file's SHA-256, which lets a later run tell an
    untouched result from a folder with the user's files in it. ``protect`` (the inputs, the
    model) may not lie inside ``out``, so replacing it cannot delete them. Disk-full and
    read-only errors while filling the folder become :class:`InputError` too.
    """
    real = check_output_folder(out, overwrite=overwrite, protect=protect)
    try:
        real.parent.mkdir(parents=True, exist_ok=True, mode=default_mode(folder=True))
    except OSError as exc:
        raise _output_error(out, "create", exc) from None
    lock = _Lock(real.parent / f".{real.name}{_LOCK}")
    try:
        locked = lock.acquire()
    except OSError as exc:
        raise _output_error(out, "write to", exc) from None
    if not locked:
        raise InputError(f"Another LVMyoSeg run is writing to {out} right now. Wait for it to end, or give "
                         "another output folder (-o).")
    staging = None
    try:
        _clean_stale(real)
        check_output_folder(out, overwrite=overwrite)  # again, now that no other run can change it
        try:
            staging = make_temp_dir(real.parent, f".{real.name}{_STAGING}")
        except OSError as exc:
            raise _output_error(out, "write to", exc) from None
        try:
            yield staging
        except OSError as exc:
            if exc.errno in _OUTPUT_ERRNOS or str(staging) in str(exc.filename or ""):
                raise _output_error(out, "write", exc) from None
            raise
        names = sorted(p.name for p in staging.iterdir() if p.is_file())
        marker = {"written_by": written_by, "files": {n: sha256_file(staging / n) for n in names}}
        try:
            (staging / MARKER_NAME).write_text(json.dumps(marker, indent=1), encoding="utf-8")
            _swap_in(staging, real)
        except OSError as exc:
            raise _output_error(out, "write", exc) from None
        staging = None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        lock.release()


def _swap_in(staging: Path, real: Path) -> None:
    """Put ``staging`` at ``real``: one rename when ``real`` is new; one exchange (or, where the
    system has none, two renames that :func:`_clean_stale` can undo) when it exists."""
    if not real.exists():
        os.rename(staging, real)
        return
    if _exchange(staging, real):
        shutil.rmtree(staging, ignore_errors=True)  # now holds the replaced folder
        return
    old = real.parent / f".{real.name}{_OLD}{secrets.token_hex(4)}"
    os.rename(real, old)
    os.rename(staging, real)
    shutil.rmtree(old, ignore_errors=True)
