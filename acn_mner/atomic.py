"""Every file and folder the project writes: under a temporary name beside its place, renamed into it when complete.

A command that is killed, or fails half way, leaves either the previous file (or folder) or the new one, never a
truncated one; a rename within one folder is atomic on POSIX file systems. A temporary name is
``.<name>.acn-<pid>-<8 random characters>.tmp``, created new (`tempfile.mkstemp` / `mkdtemp`, which open with
``O_CREAT | O_EXCL`` and never follow a link), so a link or file planted at a predictable name is never written
through, and two runs writing the same path (or two processes' parts of a distributed output) never share one.

The creating process holds an `flock` on its temporary file while it exists and removes it when the write ends:
completed, failed, interrupted (Ctrl-C) or terminated (SIGTERM, which `acn_mner.command_line` raises as an exception
so that this clean-up runs). A process that dies without unwinding (SIGKILL, a crash, a power cut) leaves it behind;
once a write of the same path completes, such a leftover is removed if it is provably dead: no process with its id
runs here, and nobody holds its lock. Another run's live temporary file, and a user's own file named like one
(``.pred.jsonl.backup01.tmp``), are never removed.

The final name is replaced only when it is nothing yet or a regular file (a folder, for folders); a symbolic link,
device, FIFO or socket there is refused with a message naming it.
"""

import fcntl
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
TEMPORARY_TAG = "acn"  # temporary names are .<name>.acn-<pid>-<random>.tmp: no name a user would type
FILES_FOLDER = "files"  # `atomic_files_into` writes into .files.acn-<pid>-<random>.tmp inside the folder


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
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "a special file"


def _leftovers(path: Path) -> Iterator[Path]:
    """Temporary names of `path` whose writer is provably dead (killed while writing it)."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{TEMPORARY_TAG}-(\d+)-[a-z0-9_]{{8}}\.tmp")
    for entry in path.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match is not None and _abandoned(entry, int(match[1])):
            yield entry


def is_leftover(entry: Path) -> bool:
    """Whether `entry` is the temporary file or folder of a write whose process is provably dead: what a killed run
    left, which the next completed write of that path removes (an output folder holding only such is empty)."""
    match = re.fullmatch(rf"\..+\.{TEMPORARY_TAG}-(\d+)-[a-z0-9_]{{8}}\.tmp", entry.name)
    return match is not None and _abandoned(entry, int(match[1]))


def _abandoned(entry: Path, pid: int) -> bool:
    """Whether the temporary file or folder `entry`, named for process `pid`, is dead: no process `pid` runs here,
    and its lock is free (the kernel drops a lock when its holder ends, however it ends; the lock also covers a writer
    in another pid namespace sharing the folder). A link at such a name was planted: it is dead too."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: no process id is that large
        pass
    except PermissionError:  # another user's process has that id
        return False
    else:
        return False
    try:
        descriptor = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # a link (ELOOP), or gone
        return entry.is_symlink()
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(descriptor)
    return True


def remove_leftovers(path: Path) -> None:
    """Called once `path` is complete (or, for a temporary working folder, no longer needed): dead writers' leftovers
    go (a link is removed, never followed)."""
    for entry in _leftovers(path):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


@contextmanager
def temporary_file(path: str | os.PathLike, folder: bool = False) -> Iterator[Path]:
    """Yield a new, empty file (`folder=True`: folder) beside `path`, named ``.<name>.acn-<pid>-<random>.tmp`` and
    locked by this process, and remove it when the block ends, however it ends (unless the block renamed it away).
    Each process's part of a distributed output is one; `atomic_path` and `atomic_folder` rename theirs into place."""
    path = Path(path)
    prefix, suffix = f".{path.name}.{TEMPORARY_TAG}-{os.getpid()}-", ".tmp"
    if folder:
        name = tempfile.mkdtemp(dir=path.parent, prefix=prefix, suffix=suffix)
        descriptor = os.open(name, os.O_RDONLY | os.O_DIRECTORY)
    else:
        descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    temporary = Path(name)
    try:
        os.fchmod(descriptor, (0o777 if folder else 0o666) & ~UMASK)
        fcntl.flock(descriptor, fcntl.LOCK_EX)  # held while the name exists: another run's clean-up leaves it
        yield temporary
    finally:
        if folder:
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            temporary.unlink(missing_ok=True)
        os.close(descriptor)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new temporary file beside `path` (empty, see `temporary_file`); it replaces `path` when the block ends
    without an error and is removed when the block fails. `path` must be nothing yet or a regular file."""
    path = Path(path)
    check_output_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with temporary_file(path) as temporary:
        yield temporary
        fsync_file(temporary)
        check_output_target(path)  # again: the target may have changed while the block ran
        os.replace(temporary, path)
        fsync_folder(path.parent)
    remove_leftovers(path)


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
    with temporary_file(path, folder=True) as temporary:
        yield temporary
        replace_folder(temporary, path)
    remove_leftovers(path)


@contextmanager
def atomic_files_into(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder inside `folder`; when the block ends without an error, each file written there is
    renamed to the same place in `folder` (one atomic rename per file; `folder`'s other files stay)."""
    folder = Path(folder)
    check_output_target(folder, "folder")
    folder.mkdir(parents=True, exist_ok=True)
    with temporary_file(folder / FILES_FOLDER, folder=True) as temporary:
        yield temporary
        move_files_into(temporary, folder)
    remove_leftovers(folder / FILES_FOLDER)


def replace_folder(source: Path, target: Path) -> None:
    """Put the complete folder `source` at `target`. An existing `target` is renamed aside first and removed after,
    so that at every moment `target` is either the old folder or the new one."""
    for file in source.rglob("*"):
        if file.is_file():
            fsync_file(file)
    fsync_folder(source)
    check_output_target(target, "folder")
    if target.exists():
        with temporary_file(target, folder=True) as old:  # empty: a folder may be renamed onto an empty one
            os.rename(target, old)
            os.rename(source, target)
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
    "is_leftover",
    "check_output_target",
    "move_files_into",
    "remove_leftovers",
    "replace_folder",
    "temporary_file",
    "write_bytes",
    "write_text",
]
