"""The CPU kind a benchmark ran on, for its printout and JSON (speed depends on it)."""

from __future__ import annotations

import os


def cpu_kind() -> str:
    """"AVX-512 (bf16)", "AVX-512", "AVX2" or "other", from /proc/cpuinfo's flags, with the core count."""
    flags = set()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            line = next((ln for ln in fh if ln.startswith("flags")), "")
            flags = set(line.split(":", 1)[-1].split())
    kind = ("AVX-512" + (" (bf16)" if "avx512_bf16" in flags else "") if "avx512f" in flags
            else "AVX2" if "avx2" in flags else "other")
    return f"{kind}, {os.cpu_count()} cores"
