"""Hostile model folders and input files for `AcnPipeline.from_pretrained` and acn-predict: a folder whose code would
run after a "y" on stdin, inputs that never end (`/dev/zero`, a FIFO, a line of a gigabyte), a killed main process
whose workers would live on, and words that render as nothing. Each test is a row of docs/reliability.md's table."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from acn_mner import predict


ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Do you wish to run the custom code?"


def run_python(arguments: list[str], tmp_path: Path, stdin: str = "", timeout: float = 300) -> subprocess.CompletedProcess:
    """`python ARGUMENTS` in a fresh process, offline, with its own module cache and `stdin` as its input."""
    environment = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT),
                   "OMP_NUM_THREADS": "1"}  # fmt: skip
    return subprocess.run([sys.executable, *arguments], input=stdin, capture_output=True, text=True, timeout=timeout,
                          env=environment, cwd=tmp_path)  # fmt: skip


# --- a folder whose code runs after a "y" ---------------------------------------------------------------


def folder_with_code(model_folder: Path, tmp_path: Path, part: str) -> tuple[Path, Path]:
    """A copy of the tiny model folder whose `part` ("model" or "processor") names a class of its own, in code that
    touches a marker file when imported; the folder and the marker."""
    folder, marker = tmp_path / "downloaded", tmp_path / "folder-code-ran"
    shutil.copytree(model_folder, folder)
    (folder / "own_code.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n", encoding="utf-8")
    config_file = folder / ("config.json" if part == "model" else "processor_config.json")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if part == "model":
        config["model_type"] = "own-acn"
        config["auto_map"] = {"AutoConfig": "own_code.OwnConfig", "AutoModelForTokenClassification": "own_code.OwnModel"}
    else:
        config["processor_class"] = "OwnProcessor"
        config["auto_map"] = {"AutoProcessor": "own_code.OwnProcessor"}
    config_file.write_text(json.dumps(config), encoding="utf-8")
    return folder, marker


LOAD_PIPELINE = """
import sys
from modeling_acn import AcnPipeline
try:
    AcnPipeline.from_pretrained(sys.argv[1], device="cpu")
except ValueError as error:
    print(f"refused: {error}", file=sys.stderr)
    sys.exit(2)
"""


@pytest.mark.slow
@pytest.mark.bad_input(
    "a model folder whose config or processor config names classes of its own code (`auto_map`), loaded by "
    "`AcnPipeline.from_pretrained` or `acn-predict` with `y` waiting on stdin",
    "no prompt, the code never runs; one line naming the folder's class and `trust_remote_code`",
)
@pytest.mark.parametrize("part, named", [("model", "model_type 'own-acn'"), ("processor", "processor_class 'OwnProcessor'")])
@pytest.mark.parametrize("loader", ["pipeline", "acn-predict"])
def test_a_folders_own_code_never_runs_on_a_yes_from_stdin(model_folder, tmp_path, part, named, loader):
    folder, marker = folder_with_code(model_folder, tmp_path, part)
    if loader == "pipeline":
        finished = run_python(["-c", LOAD_PIPELINE, str(folder)], tmp_path, stdin="y\n")
        program = "refused"
    else:
        rows = tmp_path / "rows.jsonl"
        rows.write_text(json.dumps({"text": "Obama visits Paris"}) + "\n", encoding="utf-8")
        arguments = ["--model", str(folder), "--input", str(rows), "--output", str(tmp_path / "out.jsonl"), "--device", "cpu"]
        finished = run_python(["-m", "acn_mner.predict", *arguments], tmp_path, stdin="y\n")
        program = "predict.py: error"
    assert PROMPT not in finished.stdout + finished.stderr
    assert not marker.exists()
    assert finished.returncode == 2, finished.stderr[-2000:]
    lines = [line for line in finished.stderr.splitlines() if line.startswith(f"{program}: ")]
    assert len(lines) == 1 and finished.stderr.strip().endswith(lines[0]), finished.stderr[-2000:]
    assert named in lines[0] and "trust_remote_code" in lines[0]


@pytest.mark.bad_input(
    "`acn-predict --trust_remote_code` on a folder whose code does something",
    "its code runs only with the flag; without it the installed classes tag the rows",
)
def test_acn_predict_runs_a_folders_code_only_with_trust_remote_code(model_folder, tmp_path):
    folder, marker = tmp_path / "downloaded", tmp_path / "folder-code-ran"
    shutil.copytree(model_folder, folder)
    with open(folder / "modeling_acn.py", "a", encoding="utf-8") as code:
        code.write(f"\nimport pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"text": "Obama visits Paris"}) + "\n", encoding="utf-8")
    arguments = ["--model", str(folder), "--input", str(rows), "--device", "cpu"]
    predict.main([*arguments, "--output", str(tmp_path / "installed.jsonl")])
    assert not marker.exists()
    predict.main([*arguments, "--output", str(tmp_path / "trusted.jsonl"), "--trust_remote_code"])
    assert marker.exists()
    assert (tmp_path / "trusted.jsonl").read_text(encoding="utf-8") == (tmp_path / "installed.jsonl").read_text(encoding="utf-8")
