"""Resuming where a careless user points it: another corpus's checkpoint (same label count, other names or order),
a manifest missing a field or naming files outside its folder, a checkpoint of another output_dir. Each is refused
saying what differs, skipped with a warning, or completes. Each test is a row of docs/reliability.md's table."""

import json
import logging

import pytest

from acn_mner.checkpoint import CheckpointError

from .corpus_fixtures import write_corpus
from .training_fixtures import TWEETS, run_training

FLAGS = ["--num_train_epochs", "2", "--patience", "10"]


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """Two epochs with a checkpoint after each."""
    output_dir = tmp_path_factory.mktemp("trained")
    run_training(corpus, output_dir, *FLAGS)
    return output_dir


def renamed_corpus(folder, renames: dict):
    tweets = [(image, [(word, renames.get(tag, tag)) for word, tag in words]) for image, words in TWEETS]
    return write_corpus(folder, {"train": tweets, "validation": tweets, "test": tweets})


@pytest.mark.bad_input(
    "`--resume_from_checkpoint` with a corpus whose labels have other names or order (same count), "
    "or another vocabulary",
    "refused before training, naming both label lists (or the two vocabulary digests)",
)
def test_resume_refuses_a_checkpoint_of_other_labels(trained, tmp_path):
    other = renamed_corpus(tmp_path / "corpus", {"B-OTHER": "B-MISC", "I-OTHER": "I-MISC"})  # same count, other names
    with pytest.raises(
        CheckpointError, match=r"was trained with the labels \[.*'B-OTHER'.*\], this run's corpus has \[.*'B-MISC'.*\]"
    ):
        run_training(
            other, tmp_path / "out", *FLAGS, "--resume_from_checkpoint", str(trained / "checkpoints" / "epoch_1")
        )


def test_resume_refuses_a_checkpoint_of_another_vocabulary(trained, tmp_path):
    tweets = [
        (image, [(word.upper() if word == "visits" else word, tag) for word, tag in words]) for image, words in TWEETS
    ]
    other = write_corpus(tmp_path / "corpus", {"train": tweets, "validation": tweets, "test": tweets})
    with pytest.raises(CheckpointError, match=r"was trained with another vocabulary"):
        run_training(
            other, tmp_path / "out", *FLAGS, "--resume_from_checkpoint", str(trained / "checkpoints" / "epoch_1")
        )


@pytest.mark.bad_input(
    "a checkpoint manifest whose entry lacks `bytes`, or that names `../x` or an absolute path",
    "that checkpoint is skipped with a warning naming the entry; `latest` resumes from the one before",
)
@pytest.mark.parametrize("entry", ["no bytes", "outside", "absolute"])
def test_a_malformed_manifest_is_skipped(corpus, trained, tmp_path, caplog, entry):
    import shutil

    output_dir = tmp_path / "run"
    shutil.copytree(trained, output_dir)
    manifest_path = output_dir / "checkpoints" / "epoch_2" / "checkpoint.json"
    manifest = json.loads(manifest_path.read_text())
    if entry == "no bytes":
        del manifest["files"]["model.safetensors"]["bytes"]
    else:
        name = "../epoch_1/model.safetensors" if entry == "outside" else str(output_dir / "README.md")
        manifest["files"][name] = {"bytes": 1, "sha256": "0" * 64}
    manifest_path.write_text(json.dumps(manifest))
    caplog.set_level(logging.INFO)
    run_training(corpus, output_dir, *FLAGS, "--resume_from_checkpoint", "latest")
    expected = (
        "needs 'bytes' and 'sha256'" if entry == "no bytes" else "which is not a file inside its checkpoint folder"
    )
    assert f"skipping checkpoint {output_dir / 'checkpoints' / 'epoch_2'}" in caplog.text and expected in caplog.text
    assert f"resumed from {output_dir / 'checkpoints' / 'epoch_1'}" in caplog.text


@pytest.mark.bad_input(
    "`--resume_from_checkpoint` naming a checkpoint of another `--output_dir`",
    "the run completes, taking that run's best weights too",
)
def test_resume_from_another_output_dir_completes(corpus, trained, tmp_path):
    results = run_training(
        corpus,
        tmp_path / "elsewhere",
        "--num_train_epochs",
        "3",
        "--patience",
        "10",
        "--resume_from_checkpoint",
        str(trained / "checkpoints" / "epoch_2"),
    )
    assert results["epochs_trained"] == 3 and (tmp_path / "elsewhere" / "checkpoints" / "best_model").is_dir()
    assert results["best_epoch"] <= 2  # the best weights are the other run's: the path that failed at the end
