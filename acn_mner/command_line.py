"""The console commands' entry points: what a user's input can cause (a missing or unreadable file, a refused
output, a bad value) ends the command with one line, `acn-predict: error: ...`, and exit status 2, as argparse does
for a bad flag, instead of a traceback. Other exceptions are bugs and keep their traceback.

Ctrl-C ends a command with `acn-predict: interrupted` and exit status 130, SIGTERM with `acn-predict: terminated` and
143 (128 + the signal's number, as a shell reports a command a signal ended). SIGTERM is raised as an exception
(`Terminated`) where the command is, as Ctrl-C's `KeyboardInterrupt` is, so that both unwind: every `finally` and
context manager runs, and the temporary files of unfinished writes (`acn_mner.atomic`) are removed.

Every command's parser is `ArgumentParser`: a bad or contradicting flag ends it with the usage's first line and one
line naming the problem (argparse's own error prints the whole usage first, 55 lines for `acn-train`). Path flags take
`existing_folder`, `existing_file` or `folder_or_hub_id` as their type, so that a missing folder is refused before
any work, and old flag names go through `adopt_deprecated_flags`."""

import argparse
import functools
import logging
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import NoReturn, ParamSpec, TypeVar

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

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
            # one line, also for a library's message of several
            message = " ".join(line.strip() for line in message.splitlines() if line.strip())
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


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose errors take two lines, exit status 2: the usage's first line, then
    `prog: error: message`."""

    def error(self, message: str) -> NoReturn:
        usage = self.format_usage().strip().splitlines()
        first = usage[0] + (" ..." if len(usage) > 1 else "")
        self.exit(2, f"{first}\n{self.prog}: error: {message}\n")


def existing_folder(value: str) -> Path:
    """argparse type of a folder flag: the folder must exist."""
    path = Path(value)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{'not a folder' if path.exists() else 'no such folder'}: {value!r}")
    return path


def existing_file(value: str) -> Path:
    """argparse type of a file flag: the file must exist."""
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{'not a file' if path.exists() else 'no such file'}: {value!r}")
    return path


def folder_or_hub_id(value: str) -> str:
    """argparse type of a flag that takes a local folder or a Hub id: a path that does not exist is refused unless
    it could be a Hub id (`user/name`), which the Hub answers later (`./outputs/model`, `/data/t15` and `a/b/c` are
    refused at once)."""
    if Path(value).exists():
        return value
    try:
        validate_repo_id(value)
    except HFValidationError:
        raise argparse.ArgumentTypeError(f"no such folder, nor a Hub id: {value!r}") from None
    return value


def adopt_deprecated_flags(
    parser: argparse.ArgumentParser, args: argparse.Namespace, deprecated: Mapping[str, tuple[str, str]]
) -> None:
    """`deprecated` maps an old flag (whose value argparse stored as `deprecated_<old>`) to the flag that replaces it
    and the attribute both set. Each old flag given moves its value there, with a warning naming its replacement; an
    old and a new flag that disagree (or, when the new flag stores another quantity, are both given) are refused."""
    destinations = {option: action.dest for action in parser._actions for option in action.option_strings}
    for old, (new, attribute) in deprecated.items():
        value = vars(args).pop(f"deprecated_{old}")
        if value is None:
            continue
        # before Accelerate's state exists, hence the standard logger (the same one, under Accelerate's adapter)
        logging.getLogger(__name__).warning(
            f"--{old} is deprecated and will be removed in the next release: use --{new}"
        )
        destination = destinations[f"--{new}"]
        current = getattr(args, destination, None)
        if current is not None and (current != value or destination != attribute):
            parser.error(f"--{old} {value} and --{new} {current} both set {new}: give --{new} alone")
        setattr(args, attribute, value)


__all__ = [
    "ArgumentParser",
    "Terminated",
    "adopt_deprecated_flags",
    "existing_file",
    "existing_folder",
    "folder_or_hub_id",
    "one_line_errors",
]
