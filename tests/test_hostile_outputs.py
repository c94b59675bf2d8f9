"""Outputs aimed at what a run reads or at another run's work, and runs stopped half way. An output path that is an
input (through ``..``, a link or a hard link too), lies inside the model folder or the feature cache, or (an output
folder) holds an input is refused in one line before any work; two runs writing one path keep each other's
temporary files, and a user's own file named like one is never removed; Ctrl-C and SIGTERM end a command in one line,
with no traceback and no temporary file. Each marked test is a row of docs/reliability.md's table."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from acn_mner import dataset_command, explain, onnx_export, predict
from acn_mner import train as train_acn
from acn_mner.atomic import write_text
from acn_mner.command_line import one_line_errors
from modeling_acn import AcnPipeline
from tests.corpus_fixtures import write_corpus
from tests.pipeline_fixtures import striped_image

ROW = json.dumps({"text": "Obama visits Paris"}) + "\n"


@pytest.fixture
def model_copy(model_folder, tmp_path):
    """A copy of the tiny model folder: a test that fails must not damage the shared one."""
    return Path(shutil.copytree(model_folder, tmp_path / "model"))


@pytest.fixture
def no_model_loading(monkeypatch):
    """A refusal comes before any work: loading a model fails the test."""

    def refuse_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(AcnPipeline, "from_pretrained", refuse_loading)


def refused(command, argv, capsys) -> str:
    """Run a console command that must end with one line and exit status 2; return that line."""
    with pytest.raises(SystemExit) as ended:
        command([str(arg) for arg in argv])
    assert ended.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}


# --- item 4: an output may not destroy an input of its own run --------------------------------------------------


@pytest.mark.bad_input(
    "`acn-predict --output M/model.safetensors` (or `M/config.json`): an output in the `--model` folder",
    "refused in one line before any work, naming the model folder; the model is unchanged",
)
@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_acn_predict_refuses_an_output_in_the_model_folder(model_copy, tmp_path, capsys, no_model_loading, name):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(ROW, encoding="utf-8")
    before = file_bytes(model_copy)
    argv = ["--model", model_copy, "--input", rows, "--output", model_copy / name, "--device", "cpu"]
    line = refused(predict.cli, argv, capsys)
    assert f"error: --output '{model_copy / name}' is inside the model folder '{model_copy}'" in line
    assert file_bytes(model_copy) == before


@pytest.mark.bad_input(
    "`acn-predict --output photo.jpg` where an input row names `photo.jpg` (spelled with `..`, through a linked "
    "folder, or a hard link)",
    "refused in one line before any work, naming the row (one pass over the rows, made only when the output exists "
    "already); the photo is unchanged",
)
@pytest.mark.parametrize("spelling", ["dot_dot", "linked_folder", "hard_link"])
def test_acn_predict_refuses_an_output_that_is_an_image_a_row_names(
    model_folder, tmp_path, capsys, no_model_loading, spelling
):
    striped_image().save(tmp_path / "photo.jpg")
    before = (tmp_path / "photo.jpg").read_bytes()
    rows = tmp_path / "rows.jsonl"
    rows.write_text(ROW + json.dumps({"text": "Merkel in Berlin", "image": "photo.jpg"}) + "\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path)
    os.link(tmp_path / "photo.jpg", tmp_path / "same_photo.jpg")
    output = {
        "dot_dot": tmp_path / "sub" / ".." / "photo.jpg",
        "linked_folder": tmp_path / "alias" / "photo.jpg",
        "hard_link": tmp_path / "same_photo.jpg",
    }[spelling]
    line = refused(
        predict.cli, ["--model", model_folder, "--input", rows, "--output", output, "--device", "cpu"], capsys
    )
    assert f"error: --output '{output}' is the image that {rows}:2 names '{tmp_path / 'photo.jpg'}'" in line
    assert (tmp_path / "photo.jpg").read_bytes() == before


@pytest.mark.bad_input(
    "`acn-predict --output` inside its `--feature_cache` folder",
    "refused in one line before any work, naming the feature cache; the cache is unchanged",
)
def test_acn_predict_refuses_an_output_in_the_feature_cache(model_folder, tmp_path, capsys, no_model_loading):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(ROW, encoding="utf-8")
    cache = tmp_path / "features"
    cache.mkdir()
    (cache / "dataset_info.json").write_text("{}")
    argv = ["--model", model_folder, "--input", rows, "--feature_cache", cache, "--output", cache / "dataset_info.json"]
    line = refused(predict.cli, argv, capsys)
    assert "is inside the feature cache" in line
    assert (cache / "dataset_info.json").read_text() == "{}"


@pytest.mark.bad_input(
    "`acn-explain --output M/config.json`: the picture written over the model's config",
    "refused in one line before any work; the model still loads",
)
def test_acn_explain_refuses_an_output_in_the_model_folder(model_copy, capsys, no_model_loading):
    before = file_bytes(model_copy)
    argv = ["--model", model_copy, "--text", "Obama", "--output", model_copy / "config.json", "--device", "cpu"]
    line = refused(explain.cli, argv, capsys)
    assert f"error: --output '{model_copy / 'config.json'}' is inside the model folder" in line
    assert file_bytes(model_copy) == before


@pytest.mark.bad_input(
    "`acn-export --output_dir` inside the `--model` folder, or holding its own `--calibration_images`",
    "refused in one line before any work; the model and the images are unchanged",
)
def test_acn_export_refuses_an_output_folder_that_is_or_holds_an_input(model_copy, tmp_path, capsys):
    line = refused(onnx_export.cli, ["--model", model_copy, "--output_dir", model_copy / "onnx"], capsys)
    assert f"error: --output_dir '{model_copy / 'onnx'}' is inside the model folder" in line
    assert not (model_copy / "onnx").exists()
    earlier = tmp_path / "export"  # an earlier export, which a new one replaces as a whole, with images put inside
    (earlier / "calibration").mkdir(parents=True)
    (earlier / "onnx_config.json").write_text("{}")
    striped_image().save(earlier / "calibration" / "photo.jpg")
    argv = ["--model", model_copy, "--output_dir", earlier, "--int8", "--calibration_images", earlier / "calibration"]
    line = refused(onnx_export.cli, argv, capsys)
    assert f"error: --output_dir '{earlier}' holds the --calibration_images folder" in line
    assert (earlier / "calibration" / "photo.jpg").is_file()


@pytest.mark.bad_input(
    "`acn-dataset --output_dir` that holds its `--data_dir`'s corpus files; `acn-dataset cache-features "
    "--output_dir` inside its `--dataset`",
    "refused in one line before anything is read; the corpus and the dataset are unchanged",
)
def test_acn_dataset_refuses_an_output_folder_that_is_an_input(tmp_path, capsys):
    data_dir = write_corpus(tmp_path / "corpus")
    before = file_bytes(data_dir)
    line = refused(dataset_command.cli, ["--data_dir", data_dir, "--output_dir", data_dir, "--overwrite"], capsys)
    assert f"error: --output_dir '{data_dir}' holds the --data_dir file '{data_dir / 'train.txt'}'" in line
    assert file_bytes(data_dir) == before and sorted(path.name for path in data_dir.iterdir()) == sorted(before)
    argv = [
        "cache-features",
        "--dataset",
        data_dir,
        "--vision_weights",
        "random",
        "--output_dir",
        data_dir / "features",
    ]
    line = refused(dataset_command.cli, argv, capsys)
    assert f"error: --output_dir '{data_dir / 'features'}' is inside the --dataset folder" in line


@pytest.mark.bad_input(
    "`acn-train --output_dir` that holds its own `--train_file`, or is the `--model_name_or_path` it trains further",
    "refused in one line before any work",
)
def test_acn_train_refuses_an_output_folder_that_is_or_holds_an_input(model_copy, tmp_path, capsys):
    out = write_corpus(tmp_path / "out")
    splits = [
        "--train_file",
        out / "train.txt",
        "--validation_file",
        out / "valid.txt",
        "--test_file",
        out / "test.txt",
    ]
    line = refused(train_acn.cli, [*splits, "--output_dir", out, "--num_train_epochs", "1"], capsys)
    assert f"error: --output_dir '{out}' holds the --train_file file '{out / 'train.txt'}'" in line
    assert sorted(path.name for path in out.iterdir()) == ["test.txt", "train.txt", "valid.txt"]
    argv = [
        "--model_name_or_path",
        model_copy,
        "--dataset_name",
        out,
        "--output_dir",
        model_copy,
        "--num_train_epochs",
        "1",
    ]
    line = refused(train_acn.cli, argv, capsys)
    assert f"error: --output_dir '{model_copy}' is the model folder" in line


# --- item 3: temporary files of other runs and of the user stay -------------------------------------------------

OTHER_WRITER = """
import sys
from acn_mner.atomic import atomic_path
with atomic_path(sys.argv[1]) as temporary:
    temporary.write_text("the other run's output\\n")
    print("writing", flush=True)
    sys.stdin.readline()  # until the test lets it finish
"""


@pytest.mark.bad_input(
    "two `acn-predict` runs writing the same `--output` at once",
    "each keeps its temporary file until it is done; the output is the last to finish, whole; nothing is left over",
)
def test_two_runs_writing_one_output_keep_each_others_temporary_files(model_folder, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(ROW, encoding="utf-8")
    output = tmp_path / "out" / "pred.jsonl"
    output.parent.mkdir()
    other = subprocess.Popen(
        [sys.executable, "-c", OTHER_WRITER, str(output)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout.readline() == "writing\n", other.stderr.read()
        (other_temporary,) = output.parent.iterdir()
        predict.main(["--model", str(model_folder), "--input", str(rows), "--output", str(output), "--device", "cpu"])
        assert json.loads(output.read_text())["row"] == 0 and other_temporary.exists()
    finally:
        _, errors = other.communicate("\n", timeout=120)
    assert other.returncode == 0, errors[-2000:]
    assert output.read_text() == "the other run's output\n"
    assert sorted(path.name for path in output.parent.iterdir()) == ["pred.jsonl"]


@pytest.mark.bad_input(
    "a file of the user's beside the output, named like a temporary file (`.pred.jsonl.backup01.tmp`)",
    "left as it is: only temporary names with a dead writer's process id (`.pred.jsonl.acn-<pid>-<random>.tmp`) "
    "are removed",
)
def test_a_users_file_named_like_a_temporary_file_is_never_removed(tmp_path):
    for name in (".pred.jsonl.backup01.tmp", ".pred.jsonl.12345678.tmp", ".pred.jsonl.acn-backup01.tmp"):
        (tmp_path / name).write_text("mine\n")
    write_text(tmp_path / "pred.jsonl", "{}\n")
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        ".pred.jsonl.12345678.tmp",
        ".pred.jsonl.acn-backup01.tmp",
        ".pred.jsonl.backup01.tmp",
        "pred.jsonl",
    ]


class OneProcess:
    """What `predict_file_distributed` reads of Accelerate's `PartialState`: here, a launch of one process."""

    process_index, num_processes, is_main_process = 0, 1, True

    def wait_for_everyone(self) -> None:
        pass


@pytest.mark.bad_input(
    "a file at the name distributed `acn-predict` used for a part file (`.pred.jsonl.rank0.tmp`): another "
    "launch's part, or the user's",
    "left as it is: each process's part file has a name of its own (its process id, random characters), which the "
    "processes exchange",
)
def test_a_file_at_the_old_part_file_name_survives_a_distributed_predict(model_folder, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(ROW * 3, encoding="utf-8")
    other = tmp_path / ".pred.jsonl.rank0.tmp"
    other.write_text("another launch's part\n")
    tagger = predict.RowTagger(AcnPipeline.from_pretrained(model_folder, device="cpu"), {}, is_split_into_words=False)
    dataset = predict.PreparedBatches(tagger, rows, None, batch_size=2)
    summary = predict.predict_file_distributed(tagger, dataset, tmp_path / "pred.jsonl", 0, OneProcess())
    assert summary["rows"] == 3 and len((tmp_path / "pred.jsonl").read_text().splitlines()) == 3
    assert other.read_text() == "another launch's part\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == [".pred.jsonl.rank0.tmp", "pred.jsonl", "rows.jsonl"]


LOCK_HOLDER = """
import fcntl, sys
with open(sys.argv[1]) as file:
    fcntl.flock(file, fcntl.LOCK_EX)
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_a_locked_temporary_file_is_kept_even_when_no_process_has_its_id(tmp_path):
    """A writer in another pid namespace (a container sharing the folder) has an id no process here has, but holds
    its temporary file's lock: the file stays."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()  # its process id is free now
    live = tmp_path / f".a.json.acn-{ended.pid}-abcdefgh.tmp"
    live.write_text("half")
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(live)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        write_text(tmp_path / "a.json", "{}")
        assert live.exists()
    finally:
        holder.communicate("\n", timeout=60)
    write_text(tmp_path / "a.json", "{}")  # the lock is free now: the leftover is dead
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.json"]


# --- item 10: Ctrl-C and SIGTERM end a command in one line, and leave no temporary file -----------------------


def test_ctrl_c_ends_a_command_in_one_line_with_status_130(capsys):
    def interrupted(argv):
        raise KeyboardInterrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as ended:
        one_line_errors(interrupted)([])
    assert ended.value.code == 130
    assert capsys.readouterr().err.splitlines()[-1].endswith(": interrupted")
    assert signal.getsignal(signal.SIGTERM) is before  # the command's SIGTERM handler is gone again


def running_predict(model_folder: Path, tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """`python -m acn_mner.predict` on many rows, one per batch, once it writes into its temporary output file."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text(ROW * 50_000, encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    command = [
        sys.executable,
        "-m",
        "acn_mner.predict",
        "--model",
        str(model_folder),
        "--input",
        str(rows),
        "--output",
        str(out / "pred.jsonl"),
        "--device",
        "cpu",
        "--batch_size",
        "1",
    ]
    running = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=lambda: signal.signal(
            signal.SIGINT, signal.SIG_DFL
        ),  # Ctrl-C's default, even where the tests' is ignored
    )
    deadline = time.monotonic() + 240
    while not any(out.iterdir()) and running.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.poll() is None and [path.name.startswith(".pred.jsonl.") for path in out.iterdir()] == [True]
    return running, out


@pytest.mark.slow
@pytest.mark.bad_input(
    "Ctrl-C (SIGINT) or SIGTERM while `acn-predict` writes its output",
    "one line, `predict.py: interrupted` (exit status 130) or `predict.py: terminated` (143); no traceback; the "
    "temporary file is removed",
)
@pytest.mark.parametrize(
    ("signal_number", "status", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_a_stopped_acn_predict_ends_in_one_line_and_leaves_no_temporary_file(
    model_folder, tmp_path, signal_number, status, word
):
    running, out = running_predict(model_folder, tmp_path)
    running.send_signal(signal_number)
    _, errors = running.communicate(timeout=120)
    assert running.returncode == status, errors[-3000:]
    assert errors.strip().splitlines()[-1] == f"predict.py: {word}" and "Traceback" not in errors, errors[-3000:]
    assert list(out.iterdir()) == []
