"""The conventions every command keeps (issue 37, "first contact"): a bad or contradicting flag ends the command with
the usage's first line and one line naming it; a missing folder or file argument is refused before any work; a
non-empty training --output_dir is refused unless --overwrite_output_dir (or resuming a run there); the stopping rule
cannot end a run before it has learned anything; --word_embedding_dim follows --embeddings; evaluate_acn.py takes
run_ner's names. The Hub check before training is in tests/test_hub.py."""

import json
import logging
import runpy

import pytest

from acn_mner import dataset_command, explain, onnx_export, predict
from acn_mner import train as train_acn
from acn_mner.command_line import one_line_errors

from .corpus_fixtures import write_corpus
from .training_fixtures import EVALUATE_SCRIPT, TINY_FLAGS, TWEETS, run_training

EVALUATE = runpy.run_path(str(EVALUATE_SCRIPT), run_name="evaluate_acn")  # the script's functions, not its main run
ONE_EPOCH = ["--num_train_epochs", "1", "--checkpointing_steps", "epoch"]


def parse_error(parse, argv, capsys) -> list[str]:
    """The lines that `parse(argv)` prints on stderr as it exits with status 2."""
    with pytest.raises(SystemExit) as exited:
        parse(argv)
    assert exited.value.code == 2
    return capsys.readouterr().err.strip().splitlines()


def command_lines(tmp_path, model_folder) -> dict:
    """A command line of each command (parser, argv, program name) that is complete but for the flags a test adds."""
    (tmp_path / "rows.jsonl").write_text(json.dumps({"text": "Obama"}) + "\n")
    return {
        "acn-train": (train_acn.parse_args, ["--output_dir", str(tmp_path / "out")]),
        "acn-predict": (
            predict.parse_args,
            ["--model", str(model_folder), "--input", str(tmp_path / "rows.jsonl"), "--output", str(tmp_path / "o")],
        ),
        "acn-explain": (explain.parse_args, ["--text", "Obama", "--output", str(tmp_path / "x.png")]),
        "acn-dataset": (dataset_command.parse_export_args, ["--output_dir", str(tmp_path / "export")]),
        "acn-dataset cache-features": (dataset_command.parse_cache_args, ["--output_dir", str(tmp_path / "features")]),
        "acn-export": (onnx_export.parse_args, ["--model", str(model_folder), "--output_dir", str(tmp_path / "onnx")]),
        "evaluate_acn.py": (EVALUATE["parse_args"], ["--model_name_or_path", str(model_folder)]),
    }


# --- argument errors in one line ----------------------------------------------------------------------------------


CONFLICTS = {  # flags that contradict each other, or a required one missing, and what the error line must say
    "acn-train": (
        ["--dataset_name", "someone/corpus", "--train_file", "train.json"],
        "--dataset_name and --train_file both name a corpus",
    ),
    "acn-predict": (["--batch_size", "0"], "--batch_size must be positive, got 0"),
    "acn-explain": ([], "the following arguments are required: --model"),
    "acn-dataset": ([], "the following arguments are required: --data_dir"),
    "acn-dataset cache-features": (
        ["--dataset", "someone/corpus", "--model", "someone/acn", "--vision_weights", "random"],
        "argument --vision_weights: not allowed with argument --model",
    ),
    "acn-export": (["--calibration_images", "."], "--calibration_images calibrates the int8 image trunk"),
    "evaluate_acn.py": (
        ["--dataset_name", "someone/corpus", "--test_file", str(EVALUATE_SCRIPT)],
        "--dataset_name and --test_file both name a corpus",
    ),
}


@pytest.mark.bad_input(
    "contradicting or missing flags, for every command",
    "the usage's first line and one line `PROG: error: ...` naming the flags, exit status 2 (not 55 lines of usage)",
)
@pytest.mark.parametrize("name", sorted(CONFLICTS))
def test_argument_errors_print_the_usage_first_line_and_one_line(name, model_folder, tmp_path, capsys):
    parse, argv = command_lines(tmp_path, model_folder)[name]
    extra, message = CONFLICTS[name]
    lines = parse_error(parse, [*argv, *extra], capsys)
    assert len(lines) == 2, lines
    assert lines[0].startswith("usage: ") and lines[0].endswith(" ...")
    assert ": error: " in lines[1] and message in lines[1]


def test_a_short_usage_stays_whole(capsys):
    from acn_mner.command_line import ArgumentParser

    parser = ArgumentParser(prog="tiny")
    parser.add_argument("--n", type=int, required=True)
    assert parse_error(parser.parse_args, [], capsys) == [
        "usage: tiny [-h] --n N",
        "tiny: error: the following arguments are required: --n",
    ]


# --- missing folders and files, refused up front ------------------------------------------------------------------


MISSING = [  # command, the flags naming something that does not exist, the flag the error names, and what it says
    ("acn-predict", ["--image_dir", "{missing}"], "--image_dir", "no such folder"),
    ("acn-predict", ["--feature_cache", "{missing}"], "--feature_cache", "no such folder"),
    ("acn-explain", ["--model", "{missing}"], "--model", "no such folder, nor a Hub id"),
    ("acn-dataset", ["--data_dir", "{missing}"], "--data_dir", "no such folder"),
    ("acn-dataset", ["--data_dir", "{tmp}", "--image_dir", "{missing}"], "--image_dir", "no such folder"),
    (
        "acn-dataset cache-features",
        ["--dataset", "{missing}", "--vision_weights", "random"],
        "--dataset",
        "no such folder, nor a Hub id",
    ),
    (
        "acn-dataset cache-features",
        ["--dataset", "someone/corpus", "--model", "{missing}"],
        "--model",
        "no such folder, nor a Hub id",
    ),
    ("acn-export", ["--int8", "--calibration_images", "{missing}"], "--calibration_images", "no such folder"),
    ("acn-train", ["--dataset_name", "{missing}"], "--dataset_name", "no such folder, nor a Hub id"),
    ("acn-train", ["--dataset", "{missing}"], "--dataset", "no such folder, nor a Hub id"),
    ("acn-train", ["--dataset_name", "{corpus}", "--image_dir", "{missing}"], "--image_dir", "no such folder"),
    (
        "acn-train",
        ["--dataset_name", "{corpus}", "--model_name_or_path", "{missing}"],
        "--model_name_or_path",
        "no such folder, nor a Hub id",
    ),
    ("acn-train", ["--dataset_name", "{corpus}", "--embeddings", "{missing}"], "--embeddings", "no such file"),
    (
        "acn-train",
        ["--dataset_name", "{corpus}", "--resume_from_checkpoint", "{missing}"],
        "--resume_from_checkpoint",
        "no such folder",
    ),
    ("evaluate_acn.py", ["--dataset_name", "{missing}"], "--dataset_name", "no such folder, nor a Hub id"),
    ("evaluate_acn.py", ["--dataset", "{missing}"], "--dataset", "no such folder, nor a Hub id"),
    ("evaluate_acn.py", ["--test_file", "{missing}"], "--test_file", "no such file"),
    ("evaluate_acn.py", ["--dataset_name", "{corpus}", "--image_dir", "{missing}"], "--image_dir", "no such folder"),
]


@pytest.mark.bad_input(
    "a folder or file argument that does not exist (`acn-predict --image_dir`, `acn-train --dataset_name ./data`, "
    "`evaluate_acn.py --dataset_name`, ... in every command)",
    "refused before any work in one line naming the flag and the path; a Hub id (`user/name`) is left to the Hub",
)
@pytest.mark.parametrize(("name", "flags", "flag", "message"), MISSING)
def test_missing_folders_and_files_are_refused_up_front(
    name, flags, flag, message, model_folder, corpus, tmp_path, capsys
):
    parse, argv = command_lines(tmp_path, model_folder)[name]
    missing = tmp_path / "nowhere" / "x"
    paths = {"missing": str(missing), "tmp": str(tmp_path), "corpus": str(corpus)}
    lines = parse_error(parse, [*argv, *(value.format(**paths) for value in flags)], capsys)
    assert f"error: argument {flag}: {message}: {str(missing)!r}" in lines[-1]


def test_acn_predict_with_a_missing_image_dir_writes_nothing_and_fails(model_folder, tmp_path, capsys):
    rows, output = tmp_path / "rows.jsonl", tmp_path / "tagged.jsonl"
    rows.write_text(json.dumps({"text": "Obama", "image": "a.jpg"}) + "\n")
    argv = ["--model", str(model_folder), "--input", str(rows), "--output", str(output)]
    with pytest.raises(SystemExit) as exited:
        predict.cli([*argv, "--image_dir", str(tmp_path / "images")])
    assert exited.value.code == 2 and not output.exists()
    assert "argument --image_dir: no such folder" in capsys.readouterr().err


# --- the training folder: refused when used, unless overwritten or resumed ---------------------------------------


@pytest.mark.bad_input(
    "a second `acn-train` run into a non-empty `--output_dir`",
    "refused before any work, naming --overwrite_output_dir; --overwrite_output_dir replaces the run (its "
    "checkpoints too), --resume_from_checkpoint continues it",
)
def test_a_used_output_dir_is_refused_unless_overwritten_or_resumed(corpus, tmp_path, monkeypatch):
    output_dir = tmp_path / "out"
    run_training(corpus, output_dir, "--num_train_epochs", "2")
    first_model = (output_dir / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match=r"--output_dir .*out is not empty: give --overwrite_output_dir"):
        run_training(corpus, output_dir, *ONE_EPOCH)
    assert (output_dir / "model.safetensors").read_bytes() == first_model
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("a user's file")
    with pytest.raises(ValueError, match="is not empty"):
        run_training(corpus, tmp_path / "notes", *ONE_EPOCH)

    replaced = run_training(corpus, output_dir, *ONE_EPOCH, "--overwrite_output_dir")
    assert replaced["epochs_trained"] == 1
    # the earlier run's epoch_2 is gone: `latest` resumes this run, not the one it replaced
    assert sorted(path.name for path in (output_dir / "checkpoints").glob("epoch_*")) == ["epoch_1"]
    resumed = run_training(corpus, output_dir, "--num_train_epochs", "2", "--resume_from_checkpoint", "latest")
    assert resumed["epochs_trained"] == 2


def test_what_a_killed_run_left_does_not_count_but_a_running_one_does(corpus, tmp_path):
    from acn_mner.atomic import temporary_file

    output_dir = tmp_path / "out"
    (output_dir / ".checkpoints.acn-4194305-abcdefgh.tmp").mkdir(parents=True)  # above any pid_max: its writer is dead
    with temporary_file(output_dir / "checkpoints", folder=True):  # a live run's working folder (this process's)
        with pytest.raises(ValueError, match="is not empty"):
            run_training(corpus, output_dir, *ONE_EPOCH)
    assert run_training(corpus, output_dir, *ONE_EPOCH)["epochs_trained"] == 1


def test_an_output_dir_that_is_a_file_is_refused(corpus, tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(ValueError, match=r"--output_dir .*out is a file, not a folder"):
        run_training(corpus, tmp_path / "out", *ONE_EPOCH)


# --- the stopping rule ----------------------------------------------------------------------------------------------


def test_patience_counts_only_once_dev_f1_is_above_zero():
    state = train_acn.TrainingState()
    for _ in range(10):  # the model tags everything O: nothing learned yet, so no patience spent
        state.record(0.0)
    assert state.epochs_without_improvement == 0 and state.best_epoch == 0
    assert state.record(0.2) and state.best_epoch == 10
    assert not state.record(0.1) and state.epochs_without_improvement == 1


@pytest.mark.bad_input(
    "a small corpus on which dev F1 stays 0 for the first epochs (the paper's model on a few hundred tweets)",
    "training goes on until the model finds entities; --patience counts from the first non-zero dev F1",
)
def test_a_run_whose_dev_f1_starts_at_zero_is_not_stopped_before_it_learns(tmp_path, caplog):
    """Eleven O words per entity: the text-only model tags everything O for its first four epochs (dev F1 0.00), then
    learns the six tweets. Patience 2 would have stopped it at epoch 3 with F1 0."""
    filler = [(word, "O") for word in "so i was just thinking about it all day and then".split()]
    tweets = [(image, filler + [(word, tag) for word, tag in words if tag != "O"]) for image, words in TWEETS]
    corpus = write_corpus(tmp_path / "corpus", {"train": tweets, "validation": tweets, "test": tweets})
    caplog.set_level(logging.INFO)
    flags = ["--variant", "text-only", "--learning_rate", "0.01", "--num_train_epochs", "25", "--patience", "2"]
    results = run_training(corpus, tmp_path / "out", *flags, "--checkpointing_steps", "none")
    assert "epoch 1: loss" in caplog.text and "dev F1 0.00 (best 0.00 at epoch 1)" in caplog.text
    assert results["best_epoch"] > 3 and results["test_overall_f1"] > 0.9


# --- --word_embedding_dim from --embeddings ---------------------------------------------------------------------------


def test_word_embedding_dim_defaults_to_the_embedding_files(corpus, tmp_path):
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("obama 0.1 0.2 0.3 0.4\nparis -0.1 -0.2 -0.3 -0.4\n")
    at = TINY_FLAGS.index("--word_embedding_dim")
    flags = [*TINY_FLAGS[:at], *TINY_FLAGS[at + 2 :], *ONE_EPOCH, "--embeddings", str(vectors)]
    train_acn.main(["--dataset_name", str(corpus), "--output_dir", str(tmp_path / "out"), *flags])
    assert json.loads((tmp_path / "out" / "config.json").read_text())["word_embedding_dim"] == 4
    given = ["--dataset_name", str(corpus), "--output_dir", str(tmp_path / "given"), *flags]
    with pytest.raises(ValueError, match="--embeddings vectors have 4 dimensions, --word_embedding_dim is 8"):
        train_acn.main([*given, "--word_embedding_dim", "8"])


# --- evaluate_acn.py: run_ner's names --------------------------------------------------------------------------------


def test_evaluate_takes_run_ner_names_and_the_old_ones_with_a_warning(model_folder, corpus, caplog):
    new = EVALUATE["parse_args"](
        ["--model_name_or_path", str(model_folder), "--dataset_name", str(corpus), "--per_device_eval_batch_size", "4"]
    )
    assert not [record for record in caplog.records if record.levelname == "WARNING"]
    old = EVALUATE["parse_args"](["--model", str(model_folder), "--dataset", str(corpus), "--batch_size", "4"])
    assert vars(old) == vars(new)
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert warnings == [
        f"--{old} is deprecated and will be removed in the next release: use --{new}"
        for old, new in (
            ("model", "model_name_or_path"),
            ("dataset", "dataset_name"),
            ("batch_size", "per_device_eval_batch_size"),
        )
    ]


def test_evaluate_scores_split_files_as_their_splits(model_folder, tmp_path):
    tweets = [(image, words) for image, words in TWEETS if {tag[2:] for _, tag in words} <= {"", "PER", "LOC"}]
    corpus = write_corpus(tmp_path / "corpus", {"validation": tweets[:2], "test": tweets})
    results = EVALUATE["main"](
        [
            "--model_name_or_path",
            str(model_folder),
            "--validation_file",
            str(corpus / "valid.txt"),
            "--test_file",
            str(corpus / "test.txt"),
            "--output_dir",
            str(tmp_path / "eval"),
        ]
    )
    assert sorted(results) == ["test", "validation"]
    assert results["test"]["num_gold_entities"] == sum(tag.startswith("B-") for _, w in tweets for _, tag in w)
    for split in ("validation", "test"):
        assert (tmp_path / "eval" / f"{split}_predictions.txt").is_file()
        assert json.loads((tmp_path / "eval" / f"{split}_results.json").read_text()) == results[split]


def test_evaluate_refuses_a_tag_the_model_lacks_in_one_line(model_folder, corpus, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:  # the corpus has ORG and OTHER; the tiny model knows PER and LOC
        one_line_errors(EVALUATE["main"])(["--model_name_or_path", str(model_folder), "--dataset_name", str(corpus)])
    assert exited.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar of loading the weights
    assert ": error: the test split of" in last
    assert "tags B-ORG, I-ORG, B-OTHER, I-OTHER are not the model's" in last


def test_a_user_error_of_several_lines_is_printed_as_one(capsys):
    def offline(argv):
        raise OSError("We couldn't connect to 'https://huggingface.co'.\nCheck your internet connection.")

    with pytest.raises(SystemExit) as exited:
        one_line_errors(offline)([])
    assert exited.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].endswith(
        "error: We couldn't connect to 'https://huggingface.co'. Check your internet connection."
    )
