"""A six-tweet corpus that a tiny model must learn perfectly, the tiny training flags, and helpers to run training and
examples/evaluate_acn.py, and to start launchers on a free local port."""

import json
import socket
import subprocess
import sys
from pathlib import Path

from acn_mner import train as train_acn

EVALUATE_SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "evaluate_acn.py"

TWEETS = [
    ("101", [("Obama", "B-PER"), ("visits", "O"), ("Paris", "B-LOC"), ("today", "O")]),
    ("102", [("RT", "O"), ("@nba", "O"), (":", "O"), ("Chicago", "B-ORG"), ("Bulls", "I-ORG"), ("win", "O")]),
    ("103", [("Watching", "O"), ("Star", "B-OTHER"), ("Wars", "I-OTHER"), ("with", "O"), ("Anna", "B-PER")]),
    ("104", [("Snow", "O"), ("in", "O"), ("New", "B-LOC"), ("York", "I-LOC"), ("http://t.co/x", "O")]),
    ("105", [("Google", "B-ORG"), ("hires", "O"), ("Merkel", "B-PER")]),
    ("106", [("#love", "O"), ("London", "B-LOC"), ("and", "O"), ("iPhone", "B-OTHER")]),
]
TINY_FLAGS = [
    "--word_embedding_dim",
    "16",
    "--hidden_size",
    "16",
    "--dropout",
    "0.0",
    "--per_device_train_batch_size",
    "2",
    "--learning_rate",
    "0.02",
    "--seed",
    "1",
    "--word_dropout",
    "0",
]


def run_training(corpus, output_dir, *extra):
    train_acn.main(["--dataset_name", str(corpus), "--output_dir", str(output_dir), *TINY_FLAGS, *extra])
    return json.loads((output_dir / "all_results.json").read_text())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_evaluate(model, dataset, output_dir, *extra, split="test") -> dict:
    """examples/evaluate_acn.py in its own process, as a user runs it; returns the scores it wrote."""
    command = [
        sys.executable,
        str(EVALUATE_SCRIPT),
        "--model_name_or_path",
        str(model),
        "--dataset_name",
        str(dataset),
        "--output_dir",
        str(output_dir),
        "--split",
        split,
        *extra,
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return json.loads((Path(output_dir) / f"{split}_results.json").read_text())
