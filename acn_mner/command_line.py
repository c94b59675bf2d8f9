"""The console commands' entry points: what a user's input can cause (a missing or unreadable file, a refused
output, a bad value) ends the command with one line, `acn-predict: error: ...`, and exit status 2, as argparse does
for a bad flag, instead of a traceback. Other exceptions are bugs and keep their traceback.

Ctrl-C ends a command with `acn-predict: interrupted` and exit status 130, SIGTERM with `acn-predict: terminated` and
143 (128 + the signal's number, as a shell reports a command a signal ended). SIGTERM is raised as an exception
(`Terminated`) where the command is, as Ctrl-C's `KeyboardInterrupt` is, so that both unwind: every `finally` and
context manager runs, and the temporary files of unfinished writes (`acn_mner.atomic`) are removed."""

import functools
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import ParamSpec, TypeVar

USER_ERRORS = (ValueError, OSError)  # AcnImageError, CorpusFormatError and CheckpointError are ValueErrors
INTERRUPTED_STATUS = 128 + signal.SIGINT
TERMINATED_STATUS = 128 + signal.SIGTERM
_P = ParamSpec("_P")
_R = TypeVar("_R")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's `KeyboardInterrupt` (which `except Exception` lets pass)."""


def raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def one_line_errors(main: Callable[_P, _R]) -> Callable[_P, _R]:
    """`main(argv)` as a console command: user errors printed as one line on stderr, exit status 2; Ctrl-C and
    SIGTERM end it with one line too, after the clean-up of whatever it was writing (see the module docstring)."""

    @functools.wraps(main)
    def command(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        program = Path(sys.argv[0]).name
        in_main_thread = threading.current_thread() is threading.main_thread()  # where signal handlers may be set
        previous = signal.signal(signal.SIGTERM, raise_terminated) if in_main_thread else None
        try:
            return main(*args, **kwargs)
        except USER_ERRORS as error:
            message = (
                str(error)
                if not isinstance(error, OSError) or not error.filename
                else f"{error.filename}: {error.strerror}"
            )
            print(f"{program}: error: {message}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt as interrupt:
            terminated = isinstance(interrupt, Terminated)
            print(f"{program}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
            raise SystemExit(TERMINATED_STATUS if terminated else INTERRUPTED_STATUS) from None
        finally:
            if in_main_thread:  # None: a handler set outside Python, which cannot be put back
                signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

    return command


__all__ = ["Terminated", "one_line_errors"]
