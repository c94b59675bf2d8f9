"""Resuming training: exact continuation after kill -9 at several points and from a step checkpoint inside an epoch,
damaged checkpoints skipped or named, no pickled code run, and evaluate_acn.py running a folder's code only when
asked."""

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from acn_mner import checkpoint as acn_checkpoint
from modeling_acn import AcnForTokenClassification

from .training_fixtures import TINY_FLAGS, run_evaluate, run_training

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--patience", "10", "--dropout", "0.3", "--word_dropout", "0.2"]  # both dropouts: the RNG must come back too
NUM_EPOCHS = 4
BATCHES_PER_EPOCH = 3  # six tweets, batch size 2
COMPARED = ("test_overall_f1", "validation_overall_f1", "best_epoch", "epochs_trained")


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory):
    """A run of NUM_EPOCHS epochs with checkpoints: the reference every resumed run must match bit for bit."""
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    return output_dir, run_training(corpus, output_dir, "--num_train_epochs", str(NUM_EPOCHS), *FLAGS)


def assert_same_run(resumed_dir: Path, resumed: dict, uninterrupted) -> None:
    reference_dir, reference = uninterrupted
    for key in COMPARED:
        assert resumed[key] == reference[key], key
    assert (resumed_dir / "model.safetensors").read_bytes() == (reference_dir / "model.safetensors").read_bytes()
    assert (resumed_dir / "test_predictions.txt").read_text() == (reference_dir / "test_predictions.txt").read_text()


def resume_latest(corpus, output_dir):
    return run_training(
        corpus, output_dir, "--num_train_epochs", str(NUM_EPOCHS), "--resume_from_checkpoint", "latest", *FLAGS
    )


@pytest.mark.bad_input(
    "resume from a damaged checkpoint (empty `rng_state_0.pt`), an empty `epoch_3`, a stray `epoch_2b`",
    "each is skipped with a warning naming the file; the run continues from the last good checkpoint, exactly",
)
def test_damaged_checkpoints_are_skipped_for_the_last_good_one(corpus, uninterrupted, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    run_training(corpus, tmp_path, "--num_train_epochs", "2", *FLAGS)
    checkpoints = tmp_path / "checkpoints"
    (checkpoints / "epoch_2" / "rng_state_0.pt").write_bytes(b"")
    (checkpoints / "epoch_3").mkdir()
    (checkpoints / "epoch_2b").mkdir()
    resumed = resume_latest(corpus, tmp_path)
    assert (
        f"skipping checkpoint {checkpoints / 'epoch_3'}: {checkpoints / 'epoch_3' / 'checkpoint.json'} is missing"
        in caplog.text
    )
    assert f"{checkpoints / 'epoch_2' / 'rng_state_0.pt'} is damaged" in caplog.text
    assert f"ignoring {checkpoints / 'epoch_2b'}: not a checkpoint folder" in caplog.text
    assert f"resumed from {checkpoints / 'epoch_1'}" in caplog.text
    assert_same_run(tmp_path, resumed, uninterrupted)


class Interrupted(Exception):
    """Stands for a crash in the middle of an epoch."""


def test_a_run_resumed_from_a_step_checkpoint_inside_an_epoch_ends_like_an_uninterrupted_one(
    corpus, uninterrupted, tmp_path, monkeypatch
):
    """--checkpointing_steps 2 and a crash at the 11th batch: step_10 lies one batch into epoch 4, and resuming
    trains the two batches left of it, on the same tweets with the same dropout, then epoch 4's dev scoring."""
    forward, batches = AcnForTokenClassification.forward, []

    def crashing_forward(self, *args, **kwargs):
        if self.training:
            batches.append(1)
            if len(batches) == 3 * BATCHES_PER_EPOCH + 2:
                raise Interrupted
        return forward(self, *args, **kwargs)

    flags = ["--num_train_epochs", str(NUM_EPOCHS), "--checkpointing_steps", "2", *FLAGS]
    monkeypatch.setattr(AcnForTokenClassification, "forward", crashing_forward)
    with pytest.raises(Interrupted):
        run_training(corpus, tmp_path, *flags)
    monkeypatch.setattr(AcnForTokenClassification, "forward", forward)
    checkpoints = tmp_path / "checkpoints"

    def steps_saved():
        return sorted(int(path.name.removeprefix("step_")) for path in checkpoints.glob("step_*"))

    assert steps_saved() == [2, 4, 6, 8, 10] and not list(checkpoints.glob("epoch_*"))
    assert json.loads((checkpoints / "step_10" / "training_state.json").read_text())["training"]["epoch_batches"] == 1
    resumed = run_training(corpus, tmp_path, *flags, "--resume_from_checkpoint", "latest")
    assert_same_run(tmp_path, resumed, uninterrupted)
    assert steps_saved() == [2, 4, 6, 8, 10, 12]


@pytest.mark.bad_input(
    "`--resume_from_checkpoint latest` over a folder holding both `epoch_N` and `step_N` checkpoints",
    "`CheckpointError` naming the newest of each: the two cannot be ordered, so the user names one",
)
def test_latest_refuses_to_order_epoch_and_step_checkpoints(corpus, tmp_path):
    run_training(corpus, tmp_path, "--num_train_epochs", "1", *FLAGS)
    run_training(corpus, tmp_path / "steps", "--num_train_epochs", "1", "--checkpointing_steps", "2", *FLAGS)
    (tmp_path / "steps" / "checkpoints" / "step_2").rename(tmp_path / "checkpoints" / "step_2")
    with pytest.raises(
        acn_checkpoint.CheckpointError,
        match=r"holds both epoch_N and step_N checkpoints.*newest: .*epoch_1 and .*step_2",
    ):
        run_training(corpus, tmp_path, "--num_train_epochs", "2", "--resume_from_checkpoint", "latest", *FLAGS)
    resumed = run_training(
        corpus,
        tmp_path,
        "--num_train_epochs",
        "2",
        "--resume_from_checkpoint",
        str(tmp_path / "checkpoints" / "step_2"),
        *FLAGS,
    )
    assert resumed["epochs_trained"] == 2


@pytest.mark.bad_input(
    "`--resume_from_checkpoint FOLDER` naming a damaged checkpoint",
    "`CheckpointError: FOLDER/rng_state_0.pt is damaged: ...`",
)
def test_a_named_damaged_checkpoint_is_an_error_naming_the_file(corpus, tmp_path):
    run_training(corpus, tmp_path, "--num_train_epochs", "1", *FLAGS)
    folder = tmp_path / "checkpoints" / "epoch_1"
    (folder / "rng_state_0.pt").write_bytes(b"\x00" * 5)
    with pytest.raises(acn_checkpoint.CheckpointError, match=rf"^{folder / 'rng_state_0.pt'} is damaged"):
        run_training(corpus, tmp_path, "--num_train_epochs", "2", "--resume_from_checkpoint", str(folder), *FLAGS)


class Planted:
    """A pickle that, unpickled with code execution, creates the file `marker` (a stand-in for a shell command)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.bad_input(
    "a checkpoint with a planted pickle (`custom_checkpoint_0.pkl`; `optimizer.pt` and its hash replaced)",
    "the stray file is never read; the replaced one is refused by `weights_only=True`, naming it; no code runs",
)
def test_resume_runs_no_pickled_code(corpus, tmp_path):
    run_training(corpus, tmp_path, "--num_train_epochs", "1", *FLAGS)
    folder, marker = tmp_path / "checkpoints" / "epoch_1", tmp_path / "pwned"
    (folder / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(Planted(marker)))
    run_training(corpus, tmp_path / "copy", "--num_train_epochs", "1", *FLAGS)  # unrelated run: keeps tmp_path's intact
    run_training(corpus, tmp_path, "--num_train_epochs", "2", "--resume_from_checkpoint", "latest", *FLAGS)
    assert not marker.exists()

    folder = tmp_path / "checkpoints" / "epoch_2"
    (folder / "optimizer.pt").write_bytes(pickle.dumps(Planted(marker)))
    manifest = json.loads((folder / "checkpoint.json").read_text())
    manifest["files"]["optimizer.pt"] = {
        "bytes": (folder / "optimizer.pt").stat().st_size,
        "sha256": acn_checkpoint.file_digest(folder / "optimizer.pt"),
    }
    (folder / "checkpoint.json").write_text(json.dumps(manifest))
    with pytest.raises(acn_checkpoint.CheckpointError, match=rf"cannot restore from {folder / 'optimizer.pt'}"):
        run_training(corpus, tmp_path, "--num_train_epochs", "3", "--resume_from_checkpoint", str(folder), *FLAGS)
    assert not marker.exists()


@pytest.mark.bad_input(
    "`evaluate_acn.py` on a downloaded folder whose code does something",
    "the installed classes load it; its code runs only with `--trust_remote_code`",
)
def test_evaluate_runs_folder_code_only_when_trusted(corpus, uninterrupted, tmp_path):
    folder = tmp_path / "downloaded"
    folder.mkdir()
    for path in uninterrupted[0].iterdir():
        if path.is_file():
            (folder / path.name).write_bytes(path.read_bytes())
    marker = tmp_path / "folder-code-ran"
    with open(folder / "modeling_acn.py", "a", encoding="utf-8") as code:
        code.write(f"\nimport pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    results = run_evaluate(folder, corpus, tmp_path / "installed")
    assert not marker.exists() and results["overall_f1"] == uninterrupted[1]["test_overall_f1"]
    run_evaluate(folder, corpus, tmp_path / "trusted", "--trust_remote_code")
    assert marker.exists()


@pytest.mark.slow
@pytest.mark.bad_input(
    "`kill -9` during a training step, a checkpoint write, before its rename, or while saving the best weights",
    "`--resume_from_checkpoint latest` ends with the uninterrupted run's weights, predictions and scores",
)
@pytest.mark.parametrize(
    "point, epoch", [("training_step", 3), ("checkpoint_write", 2), ("before_rename", 3), ("best_model_write", 2)]
)
def test_kill_9_then_resume_matches_an_uninterrupted_run(corpus, uninterrupted, tmp_path, point, epoch):
    command = [
        sys.executable,
        str(ROOT / "tests" / "kill_probe.py"),
        point,
        str(epoch),
        "--dataset_name",
        str(corpus),
        "--output_dir",
        str(tmp_path),
        "--num_train_epochs",
        str(NUM_EPOCHS),
        *TINY_FLAGS,
        *FLAGS,
    ]
    environment = {**os.environ, "ACN_BATCHES_PER_EPOCH": str(BATCHES_PER_EPOCH), "PYTHONPATH": str(ROOT)}
    killed = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (tmp_path / "all_results.json").exists()
    resumed = resume_latest(corpus, tmp_path)
    assert_same_run(tmp_path, resumed, uninterrupted)
    assert sorted(path.name for path in (tmp_path / "checkpoints").iterdir()) == ["best_model"] + [
        f"epoch_{number}" for number in range(1, NUM_EPOCHS + 1)
    ]  # the temporary folder of the killed write is gone
