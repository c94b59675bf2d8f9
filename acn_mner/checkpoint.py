"""Training checkpoints that continue a run exactly, are written atomically, are verified on load and run no code.

A checkpoint is a folder ``checkpoints/epoch_N`` (N epochs done) or ``checkpoints/step_N`` (N optimiser steps done,
possibly inside an epoch: the training state counts the epoch's batches) holding

    model.safetensors        the model's weights
    optimizer.pt             the optimiser's state: tensors, numbers and lists only, read with `weights_only=True`
    training_state.json      epoch counter, batches into the epoch, dev selection, learning-rate schedule,
                             gradient scaler
    rng_state_<rank>.pt      Python's, numpy's and torch's generators of each process (`weights_only=True`)
    checkpoint.json          written last: format, number of processes, and the size and SHA-256 of every file

Nothing in it is unpickled with code execution: safetensors and JSON are data, and `torch.load(weights_only=True)`
refuses any pickle that names a class or function. The processes write into ``.epoch_N.tmp`` and the main process
renames it to ``epoch_N`` (``step_N`` likewise) once ``checkpoint.json`` is on disk, so a kill at any moment leaves
either a complete, verifiable checkpoint or a hidden temporary folder that resuming ignores. Files an attacker adds
to a checkpoint (Accelerate's ``custom_checkpoint_0.pkl``, say) are never read.
"""

import hashlib
import json
import random
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from safetensors.torch import load_model, save_model

from .atomic import replace_folder

if TYPE_CHECKING:  # the model package loads transformers, which a checkpoint does not otherwise need
    from modeling_acn import AcnConfig, AcnTokenizer

logger = get_logger(__name__)

CHECKPOINT_UNITS = ("epoch", "step")  # what N counts in a checkpoint's name
CHECKPOINT_NAME = re.compile(rf"({'|'.join(CHECKPOINT_UNITS)})_(\d+)")
CHECKPOINT_FORMAT = "acn-checkpoint-1"
MANIFEST_FILE = "checkpoint.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
TRAINING_STATE_FILE = "training_state.json"
HASH_CHUNK_BYTES = 2**20


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message names the folder or file and what is wrong."""


class Stateful(Protocol):
    """What a checkpoint saves and restores of the learning-rate scheduler and of `train.TrainingState`."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


def checkpoint_folder(checkpoint_dir: Path, done: int, unit: str = "epoch") -> Path:
    """``epoch_<done>`` after `done` epochs, ``step_<done>`` after `done` optimiser steps."""
    if unit not in CHECKPOINT_UNITS:
        raise ValueError(f"unit must be 'epoch' or 'step', got {unit!r}")
    return checkpoint_dir / f"{unit}_{done}"


def rng_file(rank: int) -> str:
    return f"rng_state_{rank}.pt"


# --- saving ------------------------------------------------------------------------------------


def run_identity(config: "AcnConfig", tokenizer: "AcnTokenizer") -> dict[str, Any]:
    """What a checkpoint must share with the run that resumes it, beyond the weights' shapes: the label names in id
    order and a digest of the vocabularies (words, characters, and a pretrained encoder's subwords). Another corpus
    with as many labels, or another vocabulary of the same size, would load and learn garbage."""
    vocabularies = {"words": tokenizer.get_vocab(), "characters": tokenizer.get_char_vocab()}
    if tokenizer.subword_tokenizer is not None:
        vocabularies["subwords"] = tokenizer.subword_tokenizer.get_vocab()
    text = json.dumps(vocabularies, sort_keys=True, ensure_ascii=False)
    labels = [config.id2label[index] for index in range(len(config.id2label))]
    return {"labels": labels, "vocabulary": hashlib.sha256(text.encode("utf-8")).hexdigest()}


def save_checkpoint(
    accelerator: Accelerator,
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Stateful,
    state: Stateful,
    identity: dict[str, Any] | None = None,
) -> None:
    """Write the full training state of every process to `folder`, atomically (see the module docstring), with the
    run's `identity` (`run_identity`) in its manifest."""
    temporary = folder.with_name(f".{folder.name}.tmp")  # one name for all processes: they share the folder
    if accelerator.is_main_process:
        if temporary.is_symlink():  # planted: removed, never followed
            temporary.unlink()
        shutil.rmtree(temporary, ignore_errors=True)  # left by a run killed while writing this checkpoint
        temporary.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(rng_states(), temporary / rng_file(accelerator.process_index))
    if accelerator.is_main_process:
        save_model(accelerator.unwrap_model(model), str(temporary / MODEL_FILE))
        torch.save(optimizer.state_dict(), temporary / OPTIMIZER_FILE)
        training = {
            "training": state.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": None if accelerator.scaler is None else accelerator.scaler.state_dict(),
        }
        (temporary / TRAINING_STATE_FILE).write_text(json.dumps(training, indent=2) + "\n", encoding="utf-8")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_manifest(temporary, accelerator.num_processes, identity)
        replace_folder(temporary, folder)
    accelerator.wait_for_everyone()


def rng_states() -> dict[str, Any]:
    """This process's generators as plain data (tuples, lists, tensors) that `weights_only=True` loads."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()
    return {
        "python": random.getstate(),
        "numpy": numpy_state,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def write_manifest(folder: Path, num_processes: int, identity: dict[str, Any] | None = None) -> None:
    files = {
        path.name: {"bytes": path.stat().st_size, "sha256": file_digest(path)} for path in sorted(folder.iterdir())
    }
    manifest = {"format": CHECKPOINT_FORMAT, "num_processes": num_processes, "files": files}
    if identity is not None:
        manifest["identity"] = identity
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


# --- finding and verifying ---------------------------------------------------------------------


def find_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """`epoch_N` or `step_N` folders, newest first. Other names are not checkpoints: hidden ones (a write in progress
    when a run was killed) are skipped quietly, any other with a warning. Epochs and steps have no common order
    here (an epoch's steps are the data loader's), so a folder holding both kinds is an error that names the newest
    of each."""
    if not checkpoint_dir.is_dir():
        return []
    found: dict[str, list[tuple[int, Path]]] = {unit: [] for unit in CHECKPOINT_UNITS}
    for path in checkpoint_dir.iterdir():
        match = CHECKPOINT_NAME.fullmatch(path.name)
        if match and path.is_dir():
            found[match.group(1)].append((int(match.group(2)), path))
        elif not path.name.startswith(".") and path.name != "best_model":
            logger.warning(
                f"ignoring {path}: not a checkpoint folder (epoch_<number> or step_<number>)", main_process_only=True
            )
    kinds = [sorted(found[unit], reverse=True) for unit in CHECKPOINT_UNITS if found[unit]]
    if len(kinds) > 1:
        newest = " and ".join(str(kind[0][1]) for kind in kinds)
        raise CheckpointError(
            f"{checkpoint_dir} holds both epoch_N and step_N checkpoints, which 'latest' cannot order: name one folder "
            f"(newest: {newest})"
        )
    return [path for kind in kinds for _, path in kind]


def verify_checkpoint(folder: Path, num_processes: int) -> dict[str, Any]:
    """The manifest of a complete, undamaged checkpoint written by `num_processes` processes; `CheckpointError`
    naming the file otherwise."""
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise CheckpointError(f"{manifest_path} is missing: the checkpoint is incomplete or not of this format")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
        written_by = manifest["num_processes"]
        if manifest["format"] != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{manifest_path}: format {manifest['format']!r}, expected {CHECKPOINT_FORMAT!r}")
    except (ValueError, KeyError, TypeError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{manifest_path} is damaged ({error!r})") from None
    if written_by != num_processes:
        raise CheckpointError(
            f"{manifest_path}: written by {written_by} processes, this run has {num_processes}; "
            "an exact continuation needs the same number"
        )
    needed = [MODEL_FILE, OPTIMIZER_FILE, TRAINING_STATE_FILE] + [rng_file(rank) for rank in range(num_processes)]
    for name in needed:
        if name not in files:
            raise CheckpointError(f"{manifest_path} does not list {name}")
    if not isinstance(files, dict):
        raise CheckpointError(f"{manifest_path} is damaged: 'files' is not an object")
    for name, expected in files.items():
        if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name:
            raise CheckpointError(f"{manifest_path} names {name!r}, which is not a file inside its checkpoint folder")
        if not (
            isinstance(expected, dict)
            and isinstance(expected.get("bytes"), int)
            and isinstance(expected.get("sha256"), str)
        ):
            raise CheckpointError(
                f"{manifest_path} is damaged: the entry of {name} needs 'bytes' and 'sha256', got {expected!r}"
            )
        path = folder / name
        if path.is_symlink() or not path.is_file():
            raise CheckpointError(f"{path} is missing or not a regular file")
        if path.stat().st_size != expected["bytes"] or file_digest(path) != expected["sha256"]:
            raise CheckpointError(f"{path} is damaged: its size or SHA-256 differs from {MANIFEST_FILE}")
    return manifest


def check_identity(folder: Path, manifest: dict[str, Any], identity: dict[str, Any] | None) -> None:
    """Refuse a checkpoint written for other labels or another vocabulary than this run's, saying what differs.
    Checkpoints written before identities were recorded carry none, and are not checked."""
    saved = manifest.get("identity")
    if identity is None or saved is None:
        return
    if saved.get("labels") != identity["labels"]:
        raise CheckpointError(
            f"{folder} was trained with the labels {saved.get('labels')}, this run's corpus has {identity['labels']}: "
            "resuming would train the model on the wrong tags (start a new run, or --model_name_or_path to fine-tune)"
        )
    if saved.get("vocabulary") != identity["vocabulary"]:
        raise CheckpointError(
            f"{folder} was trained with another vocabulary (digest {str(saved.get('vocabulary'))[:12]}, this run's "
            f"{identity['vocabulary'][:12]}): its word embeddings belong to other words (was the training split or "
            "--min_word_freq changed?)"
        )


# --- loading -----------------------------------------------------------------------------------


def load_checkpoint(
    accelerator: Accelerator,
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Stateful,
    state: Stateful,
    identity: dict[str, Any] | None = None,
) -> None:
    """Restore what `save_checkpoint` wrote; `CheckpointError` naming the file when a part cannot be read, or what
    differs when the checkpoint belongs to another corpus (`check_identity`)."""
    check_identity(folder, verify_checkpoint(folder, accelerator.num_processes), identity)
    training = json.loads((folder / TRAINING_STATE_FILE).read_text(encoding="utf-8"))
    with reading(folder / MODEL_FILE):
        load_model(accelerator.unwrap_model(model), str(folder / MODEL_FILE), device=str(accelerator.device))
    with reading(folder / OPTIMIZER_FILE):
        optimizer.load_state_dict(torch.load(folder / OPTIMIZER_FILE, map_location="cpu", weights_only=True))
    with reading(folder / TRAINING_STATE_FILE):
        scheduler.load_state_dict(training["scheduler"])
        state.load_state_dict(training["training"])
        if accelerator.scaler is not None:
            accelerator.scaler.load_state_dict(training["scaler"])
    path = folder / rng_file(accelerator.process_index)
    with reading(path):
        set_rng_states(torch.load(path, weights_only=True))


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    numpy_state = states["numpy"]
    numpy_state["state"]["key"] = np.asarray(numpy_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(numpy_state)
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


@contextmanager
def reading(path: Path) -> Iterator[None]:
    """Turn any error while restoring from `path` into a `CheckpointError` that names it."""
    try:
        yield
    except CheckpointError:
        raise
    except Exception as error:
        raise CheckpointError(f"cannot restore from {path}: {error}") from error


def resume(
    accelerator: Accelerator,
    spec: str,
    checkpoint_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Stateful,
    state: Stateful,
    identity: dict[str, Any] | None = None,
) -> Path:
    """Continue from `spec`: ``latest`` (the newest checkpoint that verifies; damaged ones, malformed manifests
    included, are skipped with a warning naming the file) or a folder (which must verify). A checkpoint of other
    labels or another vocabulary than `identity` is refused. Returns the folder used."""
    if spec != "latest":
        load_checkpoint(accelerator, Path(spec), model, optimizer, scheduler, state, identity)
        logger.info(f"resumed from {spec}", main_process_only=True)
        return Path(spec)
    candidates = find_checkpoints(checkpoint_dir)
    if not candidates:
        raise ValueError(f"--resume_from_checkpoint latest: no checkpoint in {checkpoint_dir}")
    problems = []
    for folder in candidates:
        try:
            manifest = verify_checkpoint(folder, accelerator.num_processes)
        except CheckpointError as error:
            logger.warning(f"skipping checkpoint {folder}: {error}", main_process_only=True)
            problems.append(str(error))
            continue
        check_identity(folder, manifest, identity)  # another corpus's checkpoints are an error, not damage
        load_checkpoint(accelerator, folder, model, optimizer, scheduler, state, identity)
        logger.info(f"resumed from {folder}", main_process_only=True)
        return folder
    raise CheckpointError(
        f"--resume_from_checkpoint latest: no usable checkpoint in {checkpoint_dir}: " + "; ".join(problems)
    )


__all__ = [
    "CheckpointError",
    "Stateful",
    "check_identity",
    "checkpoint_folder",
    "find_checkpoints",
    "load_checkpoint",
    "resume",
    "rng_states",
    "run_identity",
    "save_checkpoint",
    "set_rng_states",
    "verify_checkpoint",
]
