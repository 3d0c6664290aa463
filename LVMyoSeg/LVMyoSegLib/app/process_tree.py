"""Stop a process together with every process it started.

Slicer's ``PythonSlicer`` is a CTKAppLauncher: it sets up the environment and runs
``python-real`` as a child in its own ``QProcess`` without passing signals on, so killing
the launcher alone leaves the Python worker (and anything it started) running. The
background runs of :mod:`LVMyoSegLib.app.process` are therefore stopped as a tree.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def _parent_map() -> dict[int, int]:
    """``{pid: parent pid}`` of every process this user can see (POSIX)."""
    proc = Path("/proc")
    if sys.platform.startswith("linux") and proc.is_dir():
        parents = {}
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # the process ended while the table was read
                continue
            # "pid (command) state ppid ...": the command may hold spaces and parentheses
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        return parents
    out = subprocess.run(["ps", "-A", "-o", "pid=", "-o", "ppid="], capture_output=True, text=True,
                         check=False).stdout
    return {int(pid): int(ppid) for pid, ppid in (line.split() for line in out.splitlines() if line.strip())}


def descendants(pid: int) -> list[int]:
    """Every process started by ``pid``, directly or further down (POSIX), parents first."""
    children: dict[int, list[int]] = {}
    for child, parent in _parent_map().items():
        children.setdefault(parent, []).append(child)
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(0), ()):
            found.append(child)
            queue.append(child)
    return found


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_tree(pid: int) -> None:
    """Kill ``pid`` and all its descendants.

    On POSIX the tree is first frozen (SIGSTOP) until no new member appears, so no member can
    start another process or be re-parented between listing and killing; then every member
    gets SIGKILL. On Windows ``taskkill /T /F`` does the same walk.
    """
    if os.name == "nt":
        subprocess.run(["taskkill", "/PID", str(pid), "/T", "/F"], capture_output=True, check=False)
        return
    frozen: list[int] = []
    while True:
        new = [p for p in [pid, *descendants(pid)] if p not in frozen]
        if not new:
            break
        for member in new:
            _signal(member, signal.SIGSTOP)
        frozen.extend(new)
    for member in frozen:
        _signal(member, signal.SIGKILL)
