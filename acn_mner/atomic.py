"""Outputs written under a temporary name beside their place and renamed into it when complete.

A command that is killed, or fails half way, leaves either the previous file (or folder) or the new one, never a
truncated one; a rename within one folder is atomic on POSIX file systems. Temporary names start with a dot and
end in ``.tmp``, so they never match the names a reader looks for.
"""

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_name(path: Path, kind: str = "tmp") -> Path:
    """The hidden name beside `path` that its writes go through: the same in every run, so that a run killed while
    writing leaves a leftover that the next write of `path` clears."""
    return path.with_name(f".{path.name}.{kind}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path beside `path`; it replaces `path` when the block ends without an error and
    is removed when the block fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(path)
    try:
        yield temporary
        fsync_file(temporary)
        os.replace(temporary, path)
        fsync_folder(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """`Path.write_text(text, encoding="utf-8")`, atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """`Path.write_bytes(data)`, atomically."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; it replaces the folder `path` when the block ends without an
    error and is removed when the block fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(path)
    shutil.rmtree(temporary, ignore_errors=True)  # left by a run killed while writing `path`
    temporary.mkdir()
    try:
        yield temporary
        replace_folder(temporary, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


@contextmanager
def atomic_files_into(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder inside `folder`; when the block ends without an error, each file written there is
    renamed to the same place in `folder` (one atomic rename per file; `folder`'s other files stay)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(folder / "files")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    try:
        yield temporary
        move_files_into(temporary, folder)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def replace_folder(source: Path, target: Path) -> None:
    """Put the complete folder `source` at `target`. An existing `target` is renamed aside first and removed after,
    so that at every moment `target` is either the old folder or the new one."""
    for file in source.rglob("*"):
        if file.is_file():
            fsync_file(file)
    fsync_folder(source)
    if target.exists():
        old = temporary_name(target, "old")
        shutil.rmtree(old, ignore_errors=True)  # left by a run killed between the two renames
        os.rename(target, old)
        os.rename(source, target)
        shutil.rmtree(old)
    else:
        os.rename(source, target)
    fsync_folder(target.parent)


def move_files_into(source: Path, target: Path) -> list[Path]:
    """Rename every file of the folder `source` (recursively) into `target` at the same relative path, each one
    atomically; other files of `target` stay. Returns the paths written."""
    written = []
    for file in sorted(source.rglob("*")):
        if file.is_file():
            destination = target / file.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            fsync_file(file)
            os.replace(file, destination)
            written.append(destination)
    fsync_folder(target)
    return written


def refuse_overwriting_inputs(output: str | os.PathLike, inputs: dict[str, str | os.PathLike | None]) -> None:
    """Raise `ValueError` when `output` is one of the command's input files (`{"--flag": path}`)."""
    output = Path(output)
    for flag, path in inputs.items():
        if path is not None and output.exists() and Path(path).exists() and os.path.samefile(output, path):
            raise ValueError(f"--output {str(output)!r} is the {flag} file; writing it would destroy the input")


def fsync_file(path: Path) -> None:
    with open(path, "rb") as file:
        os.fsync(file.fileno())


def fsync_folder(path: Path) -> None:
    """Make a rename inside `path` durable (no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


__all__ = [
    "atomic_files_into",
    "atomic_folder",
    "atomic_path",
    "move_files_into",
    "refuse_overwriting_inputs",
    "replace_folder",
    "temporary_name",
    "write_bytes",
    "write_text",
]
