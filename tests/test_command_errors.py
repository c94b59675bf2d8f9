"""Bad command lines end with one line naming the problem and exit status 2, never a traceback: a missing or folder
`--input`, a read-only output folder, a missing `--image`. Each test is a row of docs/reliability.md's table."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def command(module: str, *arguments, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, arguments)], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def assert_one_line(finished: subprocess.CompletedProcess, program: str, message: str) -> None:
    assert finished.returncode == 2, finished.stderr[-2000:]
    last = finished.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{program}: error: ") and message in last, finished.stderr[-2000:]
    assert "Traceback" not in finished.stderr


@pytest.mark.slow
@pytest.mark.bad_input(
    "`acn-predict --input` that is missing or a folder, or `--output` in a folder that cannot be written",
    "one line, `predict.py: error: ...` naming the path, exit status 2; no traceback",
)
def test_acn_predict_bad_paths_end_in_one_line(model_folder, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"text": "Obama visits Paris"}) + "\n")
    base = ["--model", model_folder, "--device", "cpu"]
    missing = command(
        "acn_mner.predict",
        *base,
        "--input",
        tmp_path / "nowhere.jsonl",
        "--output",
        tmp_path / "out.jsonl",
        cwd=tmp_path,
    )
    assert_one_line(missing, "predict.py", "nowhere.jsonl")
    folder = tmp_path / "a_folder.jsonl"
    folder.mkdir()
    assert_one_line(
        command("acn_mner.predict", *base, "--input", folder, "--output", tmp_path / "out.jsonl", cwd=tmp_path),
        "predict.py",
        "a_folder.jsonl",
    )
    (tmp_path / "plain_file").write_text("x")  # an output folder that cannot be made: a file stands there
    finished = command(
        "acn_mner.predict", *base, "--input", rows, "--output", tmp_path / "plain_file" / "out.jsonl", cwd=tmp_path
    )
    assert_one_line(finished, "predict.py", "plain_file")


@pytest.mark.slow
def test_acn_predict_read_only_output_folder_ends_in_one_line(model_folder, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"text": "Obama visits Paris"}) + "\n")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("this user (root) writes into read-only folders: run as another user to see this case")
        finished = command(
            "acn_mner.predict",
            "--model",
            model_folder,
            "--device",
            "cpu",
            "--input",
            rows,
            "--output",
            locked / "out.jsonl",
            cwd=tmp_path,
        )
        assert_one_line(finished, "predict.py", "locked")
    finally:
        locked.chmod(0o755)


@pytest.mark.slow
def test_acn_explain_missing_image_ends_in_one_line(model_folder, tmp_path):
    finished = command(
        "acn_mner.explain",
        "--model",
        model_folder,
        "--text",
        "Obama",
        "--image",
        tmp_path / "gone.jpg",
        "--output",
        tmp_path / "x.png",
        "--device",
        "cpu",
        cwd=tmp_path,
    )
    assert_one_line(finished, "explain.py", "gone.jpg: no such file")


def test_one_line_errors_keeps_bugs_as_tracebacks():
    from acn_mner.command_line import one_line_errors

    def buggy(argv):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        one_line_errors(buggy)([])
