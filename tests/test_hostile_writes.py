"""Writes an attacker or a careless user can aim elsewhere: a link planted where a temporary file goes, an output
that is a link, a device node, a FIFO or a folder. Every writer goes through `acn_mner.atomic`, which never follows
or truncates what it finds. Each test is a row of docs/reliability.md's table."""

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from acn_mner import atomic, predict
from acn_mner.atomic import atomic_folder, atomic_path, check_output_target, temporary_file, write_text

OLD_TEMPORARY_NAMES = ("{name}.tmp", ".{name}.tmp", ".{name}.rank0.tmp", ".{name}.old")  # fixed names used before


def plant_links(folder: Path, name: str, victim: Path) -> None:
    """Links to `victim` at every temporary name a writer of `folder/name` could predict."""
    for pattern in OLD_TEMPORARY_NAMES:
        (folder / pattern.format(name=name)).symlink_to(victim)


def victim_file(tmp_path: Path) -> Path:
    victim = tmp_path / "elsewhere" / "precious.txt"
    victim.parent.mkdir()
    victim.write_text("the user's own file\n")
    return victim


def special_target(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"out-{kind}"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # what /dev/null is
        except PermissionError:
            pytest.skip("this user may not create device nodes (mknod needs CAP_MKNOD)")
    elif kind == "folder":
        path.mkdir()
    elif kind == "link":
        path.symlink_to(victim_file(tmp_path))
    return path


@pytest.mark.bad_input(
    "links planted at the temporary names beside `acn-predict --output OUT/pred.jsonl`, pointing at another file",
    "that file is unchanged; `pred.jsonl` is a new regular file (temporary names are random and created exclusively)",
)
def test_predict_never_writes_through_a_planted_link(model_folder, tmp_path):
    victim = victim_file(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    plant_links(out, "pred.jsonl", victim)
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"text": "Obama visits Paris"}) + "\n")
    predict.main(
        ["--model", str(model_folder), "--input", str(rows), "--output", str(out / "pred.jsonl"), "--device", "cpu"]
    )
    assert victim.read_text() == "the user's own file\n"
    assert (out / "pred.jsonl").is_file() and not (out / "pred.jsonl").is_symlink()
    assert json.loads((out / "pred.jsonl").read_text())["row"] == 0


@pytest.mark.bad_input(
    "an output path that is a symbolic link, a device node (like `/dev/null`), a FIFO or a folder",
    "refused before anything is written, naming what it is; the node, FIFO, folder and link target stay as they were",
)
@pytest.mark.parametrize("kind", ["link", "device", "fifo", "folder"])
def test_an_output_that_is_not_a_regular_file_is_refused(tmp_path, kind):
    target = special_target(tmp_path, kind)
    before = os.lstat(target)
    expected = {"link": "a symbolic link", "device": "a character device", "fifo": "a FIFO", "folder": "a folder"}[kind]
    with pytest.raises(ValueError, match=rf"output '.*out-{kind}' is {expected}, not a regular file"):
        write_text(target, "new text")
    after = os.lstat(target)
    assert (after.st_mode, after.st_ino, after.st_size) == (before.st_mode, before.st_ino, before.st_size)
    if kind == "link":
        assert target.resolve().read_text() == "the user's own file\n"


def test_acn_predict_refuses_a_device_output_in_one_line(model_folder, tmp_path, capsys):
    target = special_target(tmp_path, "fifo")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"text": "Obama visits Paris"}) + "\n")
    with pytest.raises(ValueError, match=r"is a FIFO, not a regular file"):
        predict.main(["--model", str(model_folder), "--input", str(rows), "--output", str(target), "--device", "cpu"])
    assert stat.S_ISFIFO(os.lstat(target).st_mode)


def test_a_new_file_gets_the_permissions_open_would_give(tmp_path):
    write_text(tmp_path / "results.json", "{}")
    assert stat.S_IMODE((tmp_path / "results.json").stat().st_mode) == 0o666 & ~atomic.UMASK


def test_temporary_names_are_new_random_files_beside_the_target(tmp_path):
    names = []
    for _ in range(2):
        with atomic_path(tmp_path / "a.json") as temporary:
            names.append(temporary.name)
            assert temporary.parent == tmp_path and temporary.is_file() and temporary.stat().st_size == 0
            temporary.write_text("x")
    assert names[0] != names[1] and all(name.startswith(".a.json.") and name.endswith(".tmp") for name in names)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.json"]


def test_a_folder_output_replaces_only_a_real_folder(tmp_path):
    victim = victim_file(tmp_path)
    (tmp_path / "features").symlink_to(victim.parent)
    with pytest.raises(ValueError, match=r"output '.*features' is a symbolic link, not a regular folder"):
        with atomic_folder(tmp_path / "features") as temporary:
            (temporary / "data").write_text("x")
    assert sorted(path.name for path in victim.parent.iterdir()) == ["precious.txt"]
    plant = tmp_path / "real"
    plant.mkdir()
    (plant / "old.txt").write_text("old")
    with atomic_folder(plant) as temporary:
        (temporary / "new.txt").write_text("new")
    assert sorted(path.name for path in plant.iterdir()) == ["new.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["elsewhere", "features", "real"]  # nothing left over


def test_check_output_target_accepts_nothing_and_regular_files(tmp_path):
    check_output_target(tmp_path / "new.txt")
    (tmp_path / "old.txt").write_text("x")
    check_output_target(tmp_path / "old.txt")
    check_output_target(tmp_path, "folder")


KILLED_WRITER = """
import os, signal, sys
from acn_mner.atomic import atomic_path
with atomic_path(sys.argv[1]) as temporary:
    temporary.write_text("half")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_write(path: Path) -> Path:
    """The temporary file a process killed (SIGKILL) while writing `path` leaves."""
    before = set(path.parent.iterdir())
    finished = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)], capture_output=True, timeout=120)
    assert finished.returncode == -signal.SIGKILL, finished.stderr[-2000:]
    (left,) = set(path.parent.iterdir()) - before
    return left


def test_a_completed_write_removes_what_killed_writes_of_the_same_path_left(tmp_path):
    victim = victim_file(tmp_path)
    left = killed_write(tmp_path / "a.json")
    dead_pid = left.name.split("-")[1]  # .a.json.acn-<pid>-<random>.tmp
    (tmp_path / f".a.json.acn-{dead_pid}-pl4nt3d_.tmp").symlink_to(victim)  # a link at such a name: never followed
    other = killed_write(tmp_path / "b.json")
    write_text(tmp_path / "a.json", "{}")
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([other.name, "a.json", "elsewhere"])
    assert victim.read_text() == "the user's own file\n"


def test_a_distributed_part_file_never_writes_through_a_planted_link(tmp_path):
    victim = victim_file(tmp_path)
    output = tmp_path / "pred.jsonl"
    plant_links(tmp_path, output.name, victim)
    with temporary_file(output) as part:
        predict.write_lines([{"row": 0, "entities": []}], part, show_progress=False)
        assert json.loads(part.read_text()) == {"row": 0, "entities": []}
    assert victim.read_text() == "the user's own file\n" and not part.exists()
