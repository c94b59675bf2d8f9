"""The training command as transformers' run_ner_no_trainer.py users type it: corpora from --dataset_name or split
files (Twitter format, JSON, CSV, Parquet), --per_device_*_batch_size, --max_train_steps, --lr_scheduler_type,
--checkpointing_steps N, --report_to; --model_name_or_path continuing a trained ACN, on the same or another label set;
the old flag names with a warning; a bad value of each group refused by name; `acn-train` from an installed copy."""

import csv
import json
import os
import shutil
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import datasets
import pytest
import torch

from acn_mner import train as train_acn
from acn_mner.evaluation import gold_tags
from modeling_acn import AcnForTokenClassification
from modeling_acn.modeling_acn import CRF_INIT_RANGE

from .corpus_fixtures import corpus_text, write_corpus
from .training_fixtures import TINY_FLAGS, TWEETS, run_training

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "validation", "test")
LABELS = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-OTHER", "I-OTHER", "B-PER", "I-PER"]  # the raw loader's ids


def rows(tweets=TWEETS, tags=lambda tag: tag) -> list[dict]:
    return [{"tokens": [word for word, _ in pairs], "ner_tags": [tags(tag) for _, tag in pairs]} for _, pairs in tweets]


def write_split_files(folder: Path, suffix: str, tweets=TWEETS, tags=lambda tag: tag) -> dict[str, Path]:
    """The tweets as train/validation/test files in one format (the same tweets in each split, as the fixture)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {split: folder / f"tweets-{split}{suffix}" for split in SPLITS}
    for path in files.values():
        if suffix == ".txt":
            path.write_text(corpus_text(tweets), encoding="utf-8")
        elif suffix == ".json":
            path.write_text(json.dumps(rows(tweets, tags)), encoding="utf-8")
        elif suffix == ".jsonl":
            path.write_text("".join(json.dumps(row) + "\n" for row in rows(tweets, tags)), encoding="utf-8")
        elif suffix == ".csv":
            with open(path, "w", newline="", encoding="utf-8") as file:
                writer = csv.writer(file)
                writer.writerow(["tokens", "ner_tags"])
                writer.writerows([json.dumps(row["tokens"]), json.dumps(row["ner_tags"])] for row in rows(tweets, tags))
        else:
            datasets.Dataset.from_list(rows(tweets, tags)).to_parquet(path)
    return files


def file_flags(files: dict[str, Path]) -> list[str]:
    return [flag for split, path in files.items() for flag in (f"--{train_acn.FILE_FLAGS[split]}", str(path))]


def parse_error(argv, capsys) -> str:
    """The message of the error that parse_args exits with (without the usage lines)."""
    with pytest.raises(SystemExit):
        train_acn.parse_args(argv)
    return capsys.readouterr().err.split(" error: ", 1)[1]


# --- the old names ---------------------------------------------------------------------------------------------------


def test_old_flag_names_mean_the_new_ones_and_warn_naming_them(corpus, tmp_path, caplog):
    common = ["--output_dir", str(tmp_path)]
    new = train_acn.parse_args(
        [
            *common,
            "--dataset_name",
            str(corpus),
            "--per_device_train_batch_size",
            "4",
            "--per_device_eval_batch_size",
            "8",
            "--num_train_epochs",
            "3",
            "--checkpointing_steps",
            "none",
            "--lr_scheduler_type",
            "linear",
        ]
    )
    assert not [record for record in caplog.records if record.levelname == "WARNING"]
    old = train_acn.parse_args(
        [
            *common,
            "--dataset",
            str(corpus),
            "--batch_size",
            "4",
            "--eval_batch_size",
            "8",
            "--num_epochs",
            "3",
            "--checkpointing",
            "none",
            "--lr_schedule",
            "linear",
            "--warmup_ratio",
            "0.0",
        ]
    )
    settings = lambda args: {key: value for key, value in vars(args).items() if key != "argv"}  # noqa: E731 (argv: as typed)
    assert settings(old) == settings(new)
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert warnings == [
        f"--{old} is deprecated and will be removed in the next release: use --{new}"
        for old, (new, _) in train_acn.DEPRECATED_FLAGS.items()
    ]
    assert not any(name.startswith("deprecated_") for name in vars(old))  # the model card's command shows the new names


@pytest.mark.bad_input(
    "`--batch_size 4 --per_device_train_batch_size 8`, or `--warmup_ratio` with `--num_warmup_steps`",
    "refused before training, naming both flags",
)
def test_an_old_and_a_new_flag_that_disagree_are_refused(corpus, tmp_path, capsys):
    base = ["--dataset_name", str(corpus), "--output_dir", str(tmp_path)]
    error = parse_error([*base, "--batch_size", "4", "--per_device_train_batch_size", "8"], capsys)
    assert "--batch_size 4 and --per_device_train_batch_size 8 both set" in error
    assert "--warmup_ratio 0.1 and --num_warmup_steps 3" in parse_error(
        [*base, "--num_warmup_steps", "3", "--warmup_ratio", "0.1"], capsys
    )
    agreeing = train_acn.parse_args([*base, "--dataset", str(corpus), "--num_epochs", "2", "--num_train_epochs", "2"])
    assert agreeing.num_train_epochs == 2


# --- corpora -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".txt", ".json", ".jsonl", ".csv", ".parquet"])
def test_split_files_in_each_format_give_the_corpus_of_the_raw_folder(corpus, tmp_path, suffix):
    reference = train_acn.load_training_corpus(
        train_acn.parse_args(["--dataset_name", str(corpus), "--output_dir", str(tmp_path)])
    )
    files = write_split_files(tmp_path / "files", suffix)
    args = train_acn.parse_args([*file_flags(files), "--output_dir", str(tmp_path)])
    assert args.dataset == str(tmp_path / "files")  # names the corpus in the card; may hold cached features' trunk
    loaded = train_acn.load_training_corpus(args)
    assert train_acn.label_names(loaded) == train_acn.label_names(reference) == LABELS
    for split in SPLITS:
        assert loaded[split]["tokens"] == reference[split]["tokens"]
        assert gold_tags(loaded[split]) == gold_tags(reference[split])


def test_a_hub_style_corpus_with_its_own_column_names_and_class_labels(tmp_path):
    """A folder that datasets.load_dataset reads (here Parquet, as an export or a Hub download), with `words`/`tags`
    columns and a ClassLabel whose ids are not the raw loader's: --text_column_name and --label_column_name."""
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-OTHER", "I-OTHER"]
    features = datasets.Features(
        {"words": datasets.List(datasets.Value("string")), "tags": datasets.List(datasets.ClassLabel(names=names))}
    )
    table = datasets.Dataset.from_dict(
        {
            "words": [row["tokens"] for row in rows()],
            "tags": [[names.index(tag) for tag in row["ner_tags"]] for row in rows()],
        },
        features=features,
    )
    for split in SPLITS:
        table.to_parquet(tmp_path / "hub" / "data" / f"{split}-00000-of-00001.parquet")
    args = train_acn.parse_args(
        [
            "--dataset_name",
            str(tmp_path / "hub"),
            "--text_column_name",
            "words",
            "--label_column_name",
            "tags",
            "--output_dir",
            str(tmp_path),
        ]
    )
    loaded = train_acn.load_training_corpus(args)
    assert train_acn.label_names(loaded) == names and loaded["test"]["tokens"] == [row["tokens"] for row in rows()]
    assert gold_tags(loaded["test"]) == [row["ner_tags"] for row in rows()]


@pytest.mark.bad_input(
    "label ids without names (a JSON `ner_tags` of integers, no ClassLabel)",
    "refused naming the file; with `--model_name_or_path` the model's id2label names them",
)
def test_label_ids_need_the_names_of_a_continued_model(trained, tmp_path):
    files = write_split_files(tmp_path / "ids", ".json", tags=LABELS.index)
    args = train_acn.parse_args([*file_flags(files), "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match=rf"--train_file {files['train']}: ner_tags holds label ids without names"):
        train_acn.load_training_corpus(args)
    continued = train_acn.load_training_corpus(
        train_acn.parse_args([*file_flags(files), "--output_dir", str(tmp_path), "--model_name_or_path", str(trained)])
    )
    assert train_acn.label_names(continued) == LABELS and gold_tags(continued["test"]) == [
        row["ner_tags"] for row in rows()
    ]


@pytest.mark.bad_input(
    "corpus files that are wrong inside: a CSV cell that is not a list, a tag outside BIO, a dev tag the training "
    "split lacks, a missing column, a tweet with more words than tags, `--dataset_config_name` for a raw folder",
    "`ValueError` naming the file (or split), the row and the value",
)
def test_corpus_contents_that_cannot_train_are_named(corpus, tmp_path):
    def load(*argv):
        return train_acn.load_training_corpus(train_acn.parse_args([*argv, "--output_dir", str(tmp_path)]))

    files = write_split_files(tmp_path / "csv", ".csv")
    files["validation"].write_text('tokens,ner_tags\nObama visits,"[""B-PER"", ""O""]"\n', encoding="utf-8")
    with pytest.raises(
        ValueError, match=rf"{files['validation']}: row 1, column 'tokens': expected a list .* got 'Obama visits'"
    ):
        load(*file_flags(files))
    files = write_split_files(tmp_path / "io", ".json", tags=lambda tag: tag[2:] or "O")
    with pytest.raises(ValueError, match=r"tags must be 'O', 'B-TYPE' or 'I-TYPE' \(BIO\), got 'LOC', 'ORG'"):
        load(*file_flags(files))
    files = write_split_files(tmp_path / "new-tag", ".jsonl")
    files["validation"].write_text(json.dumps({"tokens": ["Berlin"], "ner_tags": ["B-GPE"]}) + "\n", encoding="utf-8")
    with pytest.raises(
        ValueError,
        match=rf"--validation_file {files['validation']}: row 1: tag 'B-GPE' is not one of the training split's",
    ):
        load(*file_flags(files))
    files = write_split_files(tmp_path / "columns", ".json")
    with pytest.raises(
        ValueError, match=rf"--train_file {files['train']} has no column 'words' \(its columns: tokens, ner_tags\)"
    ):
        load(*file_flags(files), "--text_column_name", "words")
    files["test"].write_text(json.dumps([{"tokens": ["Obama", "visits"], "ner_tags": ["B-PER"]}]), encoding="utf-8")
    with pytest.raises(ValueError, match=rf"--test_file {files['test']}: row 1 has 2 words and 1 tags"):
        load(*file_flags(files))
    with pytest.raises(
        ValueError,
        match=rf"dataset_config_name 'twitter2015' selects a configuration .*; {corpus} is a raw corpus folder",
    ):
        load("--dataset_name", str(corpus), "--dataset_config_name", "twitter2015")


@pytest.mark.bad_input(
    "a corpus flag that cannot work: a missing file, one split file alone, two formats, an unknown suffix, "
    "two corpora, none, `--image_dir` for JSON, a config name without a dataset",
    "refused before training, naming the flag and the value",
)
def test_corpus_flags_that_cannot_work_are_refused_by_name(corpus, tmp_path, capsys):
    json_files, txt_files = write_split_files(tmp_path / "json", ".json"), write_split_files(tmp_path / "txt", ".txt")
    out = ["--output_dir", str(tmp_path / "out")]
    cases = [
        (
            [*file_flags({**json_files, "train": tmp_path / "gone.json"})],
            f"--train_file {tmp_path / 'gone.json'} does not exist",
        ),
        (["--train_file", str(json_files["train"])], "--train_file needs --validation_file and --test_file too"),
        (
            [*file_flags({**json_files, "test": txt_files["test"]})],
            f"--test_file {txt_files['test']} and --train_file {json_files['train']} differ in format",
        ),
        (
            [*file_flags({**json_files, "train": tmp_path / "train.xlsx"})],
            f"--train_file {tmp_path / 'train.xlsx'}: expected a file ending in .txt, .json",
        ),
        (
            ["--dataset_name", str(corpus), *file_flags(json_files)],
            "--dataset_name and --train_file both name a corpus",
        ),
        ([], "no corpus: give --dataset_name"),
        (
            [*file_flags(json_files), "--image_dir", str(tmp_path)],
            f"--image_dir reads <id>.jpg for Twitter-format (.txt) files, not for --train_file {json_files['train']}",
        ),
        (
            [*file_flags(json_files), "--dataset_config_name", "x"],
            "--dataset_config_name selects a configuration of --dataset_name",
        ),
    ]
    for argv, message in cases:
        assert message in parse_error([*argv, *out], capsys), argv
    assert not (tmp_path / "out").exists()


@pytest.mark.bad_input(
    "`--checkpointing_steps 0` or `weekly`, `--max_train_steps 0`, `--num_warmup_steps -1`, "
    "`--report_to` without `--with_tracking` or naming no tracker, `--lr_scheduler_type` unknown",
    "refused before training, naming the flag and the value",
)
def test_training_flags_with_bad_values_are_refused_by_name(corpus, tmp_path, capsys):
    base = ["--dataset_name", str(corpus), "--output_dir", str(tmp_path)]
    cases = [
        (
            ["--checkpointing_steps", "0"],
            "--checkpointing_steps: expected 'epoch', 'none' or a positive number of optimiser steps, got '0'",
        ),
        (["--checkpointing_steps", "weekly"], "got 'weekly'"),
        (["--max_train_steps", "0"], "--max_train_steps must be positive, got 0"),
        (["--num_warmup_steps", "-1"], "--num_warmup_steps must be 0 or more, got -1"),
        (["--report_to", "tensorboard"], "--report_to tensorboard logs only with --with_tracking"),
        (
            ["--with_tracking", "--report_to", "tensorboard,diary"],
            "--report_to 'diary' is not a tracker Accelerate knows",
        ),
        (
            ["--lr_scheduler_type", "reduce_lr_on_plateau"],
            "argument --lr_scheduler_type: invalid choice: 'reduce_lr_on_plateau'",
        ),
    ]
    for argv, message in cases:
        assert message in parse_error([*base, *argv], capsys), argv


# --- training ------------------------------------------------------------------------------------------------------


def test_run_ner_style_training_from_json_files(tmp_path):
    """--max_train_steps 5 over 3 steps an epoch: the second epoch stops after two steps and is scored; a step
    checkpoint every 2 steps; a cosine schedule with warm-up; TensorBoard logs."""
    files = write_split_files(tmp_path / "json", ".json")
    flags = [
        *file_flags(files),
        "--output_dir",
        str(tmp_path / "out"),
        *TINY_FLAGS,
        "--per_device_train_batch_size",
        "2",
        "--per_device_eval_batch_size",
        "4",
        "--max_train_steps",
        "5",
        "--checkpointing_steps",
        "2",
        "--lr_scheduler_type",
        "cosine",
        "--num_warmup_steps",
        "2",
        "--with_tracking",
        "--report_to",
        "tensorboard",
    ]
    train_acn.main(flags)
    results = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert results["epochs_trained"] == 2 and 0.0 <= results["test_overall_f1"] <= 1.0
    assert sorted(path.name for path in (tmp_path / "out" / "checkpoints").glob("step_*")) == ["step_2", "step_4"]
    assert list((tmp_path / "out" / "runs").rglob("events.out.tfevents.*"))
    card = (tmp_path / "out" / "model_card.md").read_text()
    assert "--max_train_steps 5" in card and "--lr_scheduler_type cosine" in card and "--batch_size" not in card


def test_max_train_steps_overrides_the_epochs_and_a_warmup_share_becomes_steps():
    args = Namespace(num_train_epochs=30, max_train_steps=10, num_warmup_steps=None, warmup_ratio=0.1)
    train_acn.settle_training_length(args, steps=3)
    assert (args.num_train_epochs, args.max_train_steps, args.num_warmup_steps) == (
        4,
        10,
        1,
    ) and "warmup_ratio" not in vars(args)
    args = Namespace(num_train_epochs=30, max_train_steps=None, num_warmup_steps=5)
    train_acn.settle_training_length(args, steps=3)
    assert (args.num_train_epochs, args.max_train_steps, args.num_warmup_steps) == (30, 90, 5)


# --- continuing a trained model ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """A tiny ACN trained on the six tweets (labels PER, LOC, ORG, OTHER)."""
    output_dir = tmp_path_factory.mktemp("trained")
    run_training(corpus, output_dir, "--num_train_epochs", "30", "--checkpointing_steps", "none")
    return output_dir


def continued(trained, corpus_dir, output_dir, *extra):
    """What main builds for --model_name_or_path: the parsed flags, the corpus and the model before training."""
    args = train_acn.parse_args(
        [
            "--model_name_or_path",
            str(trained),
            "--dataset_name",
            str(corpus_dir),
            "--output_dir",
            str(output_dir),
            *extra,
        ]
    )
    corpus = train_acn.load_training_corpus(args)
    processor = train_acn.build_processor(corpus["train"], args)
    return args, train_acn.build_model(args, processor, train_acn.label_names(corpus), corpus["train"])


def test_continuing_on_the_same_labels_starts_from_the_loaded_weights(trained, corpus, tmp_path):
    args, model = continued(trained, corpus, tmp_path)
    assert (args.variant, args.hidden_size, args.word_embedding_dim, args.text_encoder) == (
        "full",
        16,
        16,
        "cnn-bilstm",
    )
    loaded = AcnForTokenClassification.from_pretrained(trained).state_dict()
    assert model.state_dict().keys() == loaded.keys()
    assert all(torch.equal(value, loaded[key]) for key, value in model.state_dict().items())


def test_continuing_on_another_label_set_keeps_the_shared_labels_weights(trained, tmp_path, caplog):
    """LOC becomes GPE: the seven shared labels keep their classifier rows and CRF scores, B-GPE and I-GPE start as
    in a new model, B-LOC and I-LOC are dropped, each named in a log line; the fine-tuned model tags GPE by name."""
    gpe = [(image_id, [(word, tag.replace("LOC", "GPE")) for word, tag in pairs]) for image_id, pairs in TWEETS]
    gpe_corpus = write_corpus(tmp_path / "gpe", {"train": gpe, "validation": gpe, "test": gpe})
    _, model = continued(trained, gpe_corpus, tmp_path / "out")
    old = AcnForTokenClassification.from_pretrained(trained)
    names, old_names = (
        [model.config.id2label[index] for index in range(9)],
        [old.config.id2label[index] for index in range(9)],
    )
    assert (
        names == ["O", "B-GPE", "I-GPE", "B-ORG", "I-ORG", "B-OTHER", "I-OTHER", "B-PER", "I-PER"]
        and old_names == LABELS
    )
    assert "new, initialised: B-GPE, I-GPE; dropped: B-LOC, I-LOC" in caplog.text
    shared = [name for name in names if name in old_names]
    new_rows, old_rows = [names.index(name) for name in shared], [old_names.index(name) for name in shared]
    assert torch.equal(model.classifier.weight[new_rows], old.classifier.weight[old_rows])
    assert torch.equal(model.classifier.bias[new_rows], old.classifier.bias[old_rows])
    assert torch.equal(
        model.crf.transitions[new_rows][:, new_rows], old.crf.transitions[old_rows][:, old_rows]
    )  # [from, to]
    assert torch.equal(model.crf.start_transitions[new_rows], old.crf.start_transitions[old_rows])
    fresh = [names.index("B-GPE"), names.index("I-GPE")]
    assert torch.equal(
        model.classifier.bias[fresh], torch.zeros(2)
    )  # a new model's initialisation; trained biases are not 0
    assert not any(
        torch.equal(model.classifier.weight[row], old.classifier.weight[index]) for row in fresh for index in range(9)
    )
    assert (
        model.crf.transitions[fresh].abs().max() <= CRF_INIT_RANGE
        and model.crf.transitions[:, fresh].abs().max() <= CRF_INIT_RANGE
    )
    body = {key: value for key, value in old.state_dict().items() if not key.startswith(("classifier.", "crf."))}
    assert all(torch.equal(model.state_dict()[key], value) for key, value in body.items())

    run = [
        "--model_name_or_path",
        str(trained),
        "--dataset_name",
        str(gpe_corpus),
        "--output_dir",
        str(tmp_path / "out"),
        "--num_train_epochs",
        "20",
        "--learning_rate",
        "0.02",
        "--per_device_train_batch_size",
        "2",
        "--word_dropout",
        "0",
        "--seed",
        "1",
        "--checkpointing_steps",
        "none",
    ]
    train_acn.main(run)
    predicted = [
        line.split(" ") for line in (tmp_path / "out" / "test_predictions.txt").read_text().splitlines() if line
    ]
    assert ["Paris", "B-GPE", "B-GPE"] in predicted and ["New", "B-GPE", "B-GPE"] in predicted
    assert json.loads((tmp_path / "out" / "config.json").read_text())["id2label"]["1"] == "B-GPE"


@pytest.mark.bad_input(
    "`--model_name_or_path` with flags that contradict it (`--hidden_size 32 --variant text-only`), "
    "that would rebuild its vocabulary (`--min_word_freq 2`), `--vision_weights random`, or a BERT folder",
    "refused before training, naming each flag with the model's value, or the folder's model_type",
)
def test_continuing_refuses_flags_that_contradict_the_loaded_model(trained, corpus, tmp_path, capsys):
    base = ["--model_name_or_path", str(trained), "--dataset_name", str(corpus), "--output_dir", str(tmp_path)]
    error = parse_error([*base, "--hidden_size", "32", "--variant", "text-only", "--word_embedding_dim", "16"], capsys)
    assert f"--model_name_or_path {trained} fixes the architecture, and these flags contradict it:" in error
    assert (
        "--hidden_size 32 (the model has --hidden_size 16)" in error
        and "--variant text-only (the model has --variant full)" in error
    )
    assert "--word_embedding_dim" not in error  # agrees with the model
    assert "--min_word_freq would build a new one" in parse_error([*base, "--min_word_freq", "2"], capsys)
    assert "--vision_weights random initialises a new model's image backbone" in parse_error(
        [*base, "--vision_weights", "random"], capsys
    )
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    error = parse_error(
        ["--model_name_or_path", str(bert), "--dataset_name", str(corpus), "--output_dir", str(tmp_path)], capsys
    )
    assert (
        f"--model_name_or_path {bert} is not an ACN model (model_type 'bert'); "
        "a pretrained text encoder goes in --text_encoder" in error
    )
    overridden = train_acn.parse_args([*base, "--dropout", "0.2"])
    assert overridden.dropout == 0.2 and overridden.hidden_size == 16


# --- an installed copy -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_acn_train_runs_from_an_installed_copy_outside_the_checkout(corpus, tmp_path):
    """`pip install` of the project into a fresh folder, then `acn-train` and `python -m acn_mner.train` from a
    folder outside the checkout: the installed acn_mner (not the checkout's) trains a model and scores it."""
    source, target, work = tmp_path / "source", tmp_path / "installed", tmp_path / "work"
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "outputs", "build", "*.egg-info", "__pycache__")
    )
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    work.mkdir()
    environment = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-c", "import acn_mner, modeling_acn; print(acn_mner.__file__); print(modeling_acn.__file__)"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=work,
        env=environment,
    )
    assert [Path(line).parent.parent for line in where.stdout.split()] == [target, target], where.stderr[-2000:]
    command = target / "bin" / "acn-train"
    shown = subprocess.run(
        [str(command), "--help"], capture_output=True, text=True, timeout=120, cwd=work, env=environment
    )
    assert shown.returncode == 0 and "--model_name_or_path" in shown.stdout, shown.stderr[-2000:]
    for name, program in (("console", [str(command)]), ("module", [sys.executable, "-m", "acn_mner.train"])):
        trained = subprocess.run(
            [
                *program,
                "--dataset_name",
                str(corpus),
                "--output_dir",
                str(work / name),
                *TINY_FLAGS,
                "--num_train_epochs",
                "1",
                "--checkpointing_steps",
                "none",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=work,
            env=environment,
        )
        assert trained.returncode == 0, trained.stderr[-3000:]
        assert json.loads((work / name / "all_results.json").read_text())["epochs_trained"] == 1
