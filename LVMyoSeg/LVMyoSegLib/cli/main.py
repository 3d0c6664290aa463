"""The ``lvmyoseg`` command line: the parser, and the exit code and message of every way a command ends.

Exit codes: 0 done; 2 an error (message on stderr, nothing half-written);
3 (``segment``, ``demo``) the segmentation was written but the cardiac function values
were withheld as meaningless (reason on stderr and in report.json ``function_withheld``).
The commands are in :mod:`.segment_commands`, :mod:`.training_commands` and :mod:`.model_commands`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from .. import __version__
from ..errors import LVMyoSegError
from . import model_commands, segment_commands, training_commands

EXIT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lvmyoseg", description=(
        "LV myocardium segmentation of short-axis cine MRI (CNN + multi-level ConvLSTM ensemble)."),
        epilog="Exit codes: 0 done; 2 error; 3 segmentation written but the cardiac function "
               "withheld (reason on stderr and in report.json).")
    parser.add_argument("--version", action="version", version=f"lvmyoseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    segment_commands.add_parsers(sub)
    training_commands.add_parsers(sub)
    model_commands.add_parsers(sub)
    return parser


class _Terminated(BaseException):  # not an Exception: no `except Exception` may swallow it
    """SIGTERM arrived (a job scheduler or a parent process stopped this run)."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        return int(args.func(args) or 0)
    except _Terminated:  # unwinds like Ctrl-C, so staging folders are removed
        print("lvmyoseg: stopped (SIGTERM). The unfinished output folder was not written (outputs appear whole "
              "or not at all); a training run resumes from its last checkpoint when run again.", file=sys.stderr)
        return 143
    except LVMyoSegError as exc:
        print(f"lvmyoseg: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("\nlvmyoseg: interrupted. The unfinished output folder was not written (outputs appear whole or "
              "not at all); a training run resumes from its last checkpoint when run again.", file=sys.stderr)
        return 130
    except OSError as exc:  # a file-system failure no check foresaw: say which file, not a traceback
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"lvmyoseg: error: {exc.strerror or exc}{where}. Check that the path exists, that you may "
              "write there and that the disk has free space, then run the command again.", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
