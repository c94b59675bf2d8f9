"""Every file and folder the project writes: under a temporary name beside its place, renamed into it when complete.

A command that is killed, or fails half way, leaves either the previous file (or folder) or the new one, never a
truncated one; a rename within one folder is atomic on POSIX file systems. Temporary names start with a dot, end in
``.tmp`` and hold random characters: they are created new (`tempfile.mkstemp` / `mkdtemp`, which open with
``O_CREAT | O_EXCL`` and never follow a link), so a link or file planted at a predictable name is never written
through; once a write completes, the temporary names of earlier, killed writes of the same path are removed. The
final name is replaced only when it is nothing yet or a regular file (a folder, for folders); a symbolic link,
device, FIFO or socket there is refused with a message naming it.
"""

import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()  # new files get the permissions open() would give them, not mkstemp's 0600


def temporary_name(path: Path, kind: str = "tmp") -> Path:
    """A fixed hidden name beside `path`, for files that several processes must find by name (each process's part
    of a distributed output). Open it with `create_exclusive`, which never follows what is there."""
    return path.with_name(f".{path.name}.{kind}")


def check_output_target(path: str | os.PathLike, kind: str = "file") -> None:
    """Raise `ValueError` unless `path` is nothing yet or a regular file (`kind="folder"`: a real folder)."""
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    expected = stat.S_ISDIR(mode) if kind == "folder" else stat.S_ISREG(mode)
    if not expected:
        found = _file_kind(mode)
        raise ValueError(
            f"output {str(path)!r} is {found}, not a regular {kind}: outputs replace only a regular {kind} or "
            "nothing (a link is never followed); choose another path"
        )


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISREG, "a regular file"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return name
    return "a special file"


def create_exclusive(path: str | os.PathLike, mode: str = "w", **open_kwargs):
    """Open a new file at the fixed name `path` for writing: whatever is there (a leftover of a killed run, or a
    planted link) is removed first without being followed, and the file is created with ``O_CREAT | O_EXCL |
    O_NOFOLLOW``, so it is never an existing file or a link's target."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
    return os.fdopen(descriptor, mode, **open_kwargs)


def _leftovers(path: Path) -> list[Path]:
    """Temporary names of `path` left by runs killed while writing it (`tempfile`'s 8 random characters)."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")
    return [entry for entry in path.parent.iterdir() if pattern.fullmatch(entry.name)]


def _remove_leftovers(path: Path) -> None:
    """Called once `path` is complete: earlier runs' leftovers go (a link is removed, never followed)."""
    for entry in _leftovers(path):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _new_temporary_file(path: Path) -> Path:
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(descriptor, 0o666 & ~UMASK)
    finally:
        os.close(descriptor)
    return Path(name)


def _new_temporary_folder(path: Path) -> Path:
    folder = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    folder.chmod(0o777 & ~UMASK)
    return folder


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new temporary file beside `path` (empty, under a random name); it replaces `path` when the block ends
    without an error and is removed when the block fails. `path` must be nothing yet or a regular file."""
    path = Path(path)
    check_output_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _new_temporary_file(path)
    try:
        yield temporary
        fsync_file(temporary)
        check_output_target(path)  # again: the target may have changed while the block ran
        os.replace(temporary, path)
        fsync_folder(path.parent)
        _remove_leftovers(path)
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
    check_output_target(path, "folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _new_temporary_folder(path)
    try:
        yield temporary
        replace_folder(temporary, path)
        _remove_leftovers(path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


@contextmanager
def atomic_files_into(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder inside `folder`; when the block ends without an error, each file written there is
    renamed to the same place in `folder` (one atomic rename per file; `folder`'s other files stay)."""
    folder = Path(folder)
    check_output_target(folder, "folder")
    folder.mkdir(parents=True, exist_ok=True)
    temporary = _new_temporary_folder(folder / "files")
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
    check_output_target(target, "folder")
    if target.exists():
        old = _new_temporary_folder(target)  # empty: a folder may be renamed onto an empty one
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
            check_output_target(destination)
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
    "check_output_target",
    "create_exclusive",
    "move_files_into",
    "refuse_overwriting_inputs",
    "replace_folder",
    "temporary_name",
    "write_bytes",
    "write_text",
]
