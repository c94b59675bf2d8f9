"""The console commands' entry points: what a user's input can cause (a missing or unreadable file, a refused
output, a bad value) ends the command with one line, `acn-predict: error: ...`, and exit status 2, as argparse does
for a bad flag, instead of a traceback. Other exceptions are bugs and keep their traceback."""

import functools
import sys
from pathlib import Path

USER_ERRORS = (ValueError, OSError)  # AcnImageError, CorpusFormatError and CheckpointError are ValueErrors


def one_line_errors(main):
    """`main(argv)` as a console command: user errors printed as one line on stderr, exit status 2."""

    @functools.wraps(main)
    def command(argv=None):
        try:
            return main(argv)
        except USER_ERRORS as error:
            message = str(error) if not isinstance(error, OSError) or not error.filename else f"{error.filename}: {error.strerror}"
            print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
            raise SystemExit(2) from None

    return command


__all__ = ["one_line_errors"]
