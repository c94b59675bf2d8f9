"""The one output-path check that every command writing a file or folder runs first: an output may not destroy an
input of its own run.

An output is refused, before any work, when it is an input (the same file, reached through a link, a hard link or
``..`` too), lies inside a folder that is an input (a model folder, a feature cache, a dataset: read as a whole, so a
file written there changes it), or, for an output folder (replaced as a whole, or written into), holds an input. Paths
that do not exist (yet), and Hub ids, are nothing an output can destroy.
"""

import os
import stat
from collections.abc import Iterable
from pathlib import Path


def refuse_overwriting_inputs(
    output: str | os.PathLike,
    inputs: Iterable[tuple[str, str | os.PathLike | None]],
    flag: str = "--output",
    folder: bool = False,
) -> None:
    """Raise `ValueError` naming the input when writing `output` (given as `flag`; `folder=True`: an output folder)
    would destroy one of `inputs`, pairs of what the input is (``"--input file"``, ``"model folder"``) and its path
    (None: not given). `inputs` is read lazily, so it may be a long generator (the images an input's rows name)."""
    real_output = Path(os.path.realpath(output))
    output_identity = _identity(output)
    for what, path in inputs:
        if path is None or (status := _status(path)) is None:
            continue
        if (status.st_dev, status.st_ino) == output_identity:
            relation = "is"
        elif stat.S_ISDIR(status.st_mode) and real_output.is_relative_to(os.path.realpath(path)):
            relation = "is inside"
        elif folder and Path(os.path.realpath(path)).is_relative_to(real_output):
            relation = "holds"
        else:
            continue
        raise ValueError(
            f"{flag} {str(output)!r} {relation} the {what} {str(path)!r}: writing it would destroy an input of this "
            "run; choose another path"
        )


def _status(path: str | os.PathLike) -> os.stat_result | None:
    """`os.stat(path)` (links followed), or None where there is nothing: a missing path, a Hub id, a URL."""
    try:
        return os.stat(path)
    except (OSError, ValueError):  # ValueError: a path with a NUL character, which no file has
        return None


def _identity(path: str | os.PathLike) -> tuple[int, int] | None:
    status = _status(path)
    return None if status is None else (status.st_dev, status.st_ino)


__all__ = ["refuse_overwriting_inputs"]
