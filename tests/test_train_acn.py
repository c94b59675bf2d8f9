"""End-to-end runs of the training script (acn_mner.train, examples/train_acn.py) and examples/evaluate_acn.py on a
tiny corpus, in one process and with two processes under accelerate launch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

from acn_mner import train as train_acn

from .training_fixtures import TINY_FLAGS, TWEETS, free_port, run_evaluate, run_training

ROOT = Path(__file__).resolve().parents[1]


def test_overfits_a_tiny_corpus_and_writes_every_output(corpus, tmp_path):
    results = run_training(
        corpus,
        tmp_path,
        "--num_train_epochs",
        "40",
        "--patience",
        "40",
        "--checkpointing_steps",
        "none",
        "--hub_dataset_id",
        "someone/tiny-tweets",
    )
    assert results["test_overall_f1"] == 1.0 and results["validation_overall_f1"] == 1.0
    assert results["test_num_gold_entities"] == 10
    for name in (
        "config.json",
        "model.safetensors",
        "modeling_acn.py",
        "processor_config.json",
        "results.md",
        "model_card.md",
        "README.md",
        "test_predictions.txt",
        "validation_predictions.txt",
    ):
        assert (tmp_path / name).is_file(), name
    lines = (tmp_path / "test_predictions.txt").read_text().splitlines()
    assert lines[:2] == ["Obama B-PER B-PER", "visits O O"] and lines[4] == ""
    command = (tmp_path / "model_card.md").read_text().split("## Training command", 1)[1]
    assert "--num_train_epochs 40 --patience 40" in command and "run_identity" not in command  # as given
    assert (
        "model-index" in (tmp_path / "model_card.md").read_text()
        and "someone/tiny-tweets" in (tmp_path / "README.md").read_text()
    )
    assert "| full (test) | lenient |" in (tmp_path / "results.md").read_text()

    tagger = pipeline("multimodal-ner", model=str(tmp_path), trust_remote_code=True)
    entities = tagger("Obama visits Paris today")
    assert [(entity["entity_group"], entity["word"]) for entity in entities] == [("PER", "Obama"), ("LOC", "Paris")]

    evaluated = run_evaluate(tmp_path, corpus, tmp_path / "eval")
    assert evaluated["overall_f1"] == 1.0 and (tmp_path / "eval" / "test_predictions.txt").is_file()


def test_cached_image_features_are_read_from_the_dataset(corpus, tmp_path):
    dataset = train_acn.load_corpus(str(corpus))
    rng = np.random.default_rng(0)

    def add_features(rows):
        features = rng.random((len(rows["tokens"]), 49, 512), dtype=np.float32).astype(np.float16)
        return {"image_features": features, "image_mask": [True] * len(rows["tokens"])}

    features = dataset["train"].features.copy()
    features["image_features"] = datasets.Array2D(shape=(49, 512), dtype="float16")
    features["image_mask"] = datasets.Value("bool")
    cached = dataset.map(add_features, batched=True, features=features)
    cached.save_to_disk(tmp_path / "cached")
    results = run_training(
        tmp_path / "cached", tmp_path / "out", "--num_train_epochs", "2", "--checkpointing_steps", "none"
    )
    assert 0.0 <= results["test_overall_f1"] <= 1.0


def test_resumed_run_ends_like_an_uninterrupted_one(corpus, tmp_path):
    flags = ["--patience", "10", "--dropout", "0.3"]  # dropout: the RNG state must be restored too
    uninterrupted = run_training(corpus, tmp_path / "a", "--num_train_epochs", "4", *flags)
    run_training(corpus, tmp_path / "b", "--num_train_epochs", "2", *flags)
    resumed = run_training(
        corpus, tmp_path / "b", "--num_train_epochs", "4", "--resume_from_checkpoint", "latest", *flags
    )
    assert sorted((tmp_path / "b" / "checkpoints").glob("epoch_*")) == [
        tmp_path / "b" / "checkpoints" / f"epoch_{epoch}" for epoch in (1, 2, 3, 4)
    ]
    for key in ("test_overall_f1", "validation_overall_f1", "best_epoch", "epochs_trained"):
        assert resumed[key] == uninterrupted[key], key
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_a_run_without_checkpoints_holds_its_weights_once(corpus, tmp_path):
    """--checkpointing_steps none: the best and the kept epochs' weights live in a temporary folder that goes once
    the final model is written (with a killed run's leftover of it); a run with checkpoints keeps checkpoints/ and
    the best weights in it, which a resumed run may end on."""
    flags = ["--num_train_epochs", "2", "--average_last_epochs", "2"]
    leftover = tmp_path / "none" / ".checkpoints.acn-4194305-abcdefgh.tmp"  # above any pid_max: its writer is dead
    (leftover / "best_model").mkdir(parents=True)
    run_training(corpus, tmp_path / "none", *flags, "--checkpointing_steps", "none")
    weights = [path.relative_to(tmp_path / "none").as_posix() for path in (tmp_path / "none").rglob("*.safetensors")]
    assert weights == ["model.safetensors"] and not (tmp_path / "none" / "checkpoints").exists()
    assert not [path.name for path in (tmp_path / "none").iterdir() if path.name.startswith(".")]

    run_training(corpus, tmp_path / "epoch", *flags)
    checkpoints = tmp_path / "epoch" / "checkpoints"
    assert sorted(path.name for path in checkpoints.iterdir()) == ["best_model", "epoch_1", "epoch_2", "epoch_weights"]
    assert (checkpoints / "best_model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_two_process_accelerate_launch(corpus, tmp_path):
    """The README's CPU launch command starts two processes that split every epoch and every evaluation."""
    num_epochs, probe_dir = 2, tmp_path / "probe"
    probe_dir.mkdir()
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--main_process_port",
        str(free_port()),
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(ROOT / "tests" / "distributed_probe.py"),
        str(probe_dir),
        "--dataset_name",
        str(corpus),
        "--output_dir",
        str(tmp_path / "out"),
        "--num_train_epochs",
        str(num_epochs),
        *TINY_FLAGS,
        "--per_device_train_batch_size",
        "1",
        "--per_device_eval_batch_size",
        "3",
    ]
    environment = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment, cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr[-3000:]
    ranks = [json.loads((probe_dir / f"rank_{rank}.json").read_text()) for rank in (0, 1)]
    assert sorted(path.name for path in probe_dir.iterdir()) == ["rank_0.json", "rank_1.json"]

    def tweets(batches):
        return [tuple(tweet) for batch in batches for tweet in batch]

    for epoch in range(num_epochs):
        per_rank = [tweets(rank["train"][epoch]) for rank in ranks]
        assert [len(rank["train"][epoch]) for rank in ranks] == [len(TWEETS) // 2] * 2  # half the batches each
        assert len(set(per_rank[0] + per_rank[1])) == len(TWEETS) and not set(per_rank[0]) & set(per_rank[1])
    test_pass = [tweets(rank["evaluation"][-1]) for rank in ranks]  # the last pass scores the test split
    assert len(test_pass[0]) == len(test_pass[1]) == len(TWEETS) // 2
    assert len(set(test_pass[0] + test_pass[1])) == len(TWEETS)  # every test tweet scored once, by one process

    results = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert results["num_processes"] == 2 and results["test_num_gold_entities"] == 10
    manifest = json.loads((tmp_path / "out" / "checkpoints" / f"epoch_{num_epochs}" / "checkpoint.json").read_text())
    assert manifest["num_processes"] == 2 and {"rng_state_0.pt", "rng_state_1.pt"} <= set(manifest["files"])
    predicted = (tmp_path / "out" / "test_predictions.txt").read_text().strip().split("\n\n")
    assert [[line.split(" ")[0] for line in tweet.split("\n")] for tweet in predicted] == [
        [word for word, _ in tweet] for _, tweet in TWEETS
    ]  # each test tweet once, in order


def test_word_dropout_replaces_real_words_only():
    from modeling_acn import AcnDataCollator, AcnImageProcessor, AcnProcessor, AcnTokenizer

    tokenizer = AcnTokenizer.from_corpus([["Obama", "visits", "Paris"]])
    processor = AcnProcessor(image_processor=AcnImageProcessor(), tokenizer=tokenizer)
    rows = [{"tokens": ["Obama", "visits", "Paris"], "ner_tags": [1, 0, 3]}, {"tokens": ["Paris"], "ner_tags": [3]}]
    kept = AcnDataCollator(processor, "none")(rows)["input_ids"]
    dropped = AcnDataCollator(processor, "none", word_dropout=1.0)(rows)["input_ids"]
    assert (kept[0] > tokenizer.unk_token_id).all()
    assert dropped.tolist() == [[1, 1, 1], [1, 0, 0]]  # [UNK] for every word, [PAD] stays


@pytest.mark.parametrize("flag, expected", [([], "love"), (["--no-hashtags_as_words"], "#love")])
def test_hashtag_vocabulary_flag(flag, expected, corpus, tmp_path):
    args = train_acn.parse_args(["--dataset_name", str(corpus), "--output_dir", str(tmp_path), *flag])
    split = datasets.Dataset.from_dict({"tokens": [[word for word, _ in tweet] for _, tweet in TWEETS]})
    tokenizer = train_acn.build_processor(split, args).tokenizer
    assert expected in tokenizer.get_vocab()
    assert tokenizer.char_form("#love") == "#love"


@pytest.mark.parametrize(
    "encoder, epochs, schedule, warmup, lstm, recipe",
    [
        ([], 30, "inverse", 0.0, True, (1.0, 0.0, 0.0)),
        (["--text_encoder", "some/checkpoint"], 8, "linear", 0.1, True, (0.9, 0.3, 1.0)),
        (
            [
                "--text_encoder",
                "x",
                "--num_train_epochs",
                "3",
                "--no-use_lstm",
                "--fgm_epsilon",
                "0",
                "--mention_replacement",
                "0",
            ],
            3,
            "linear",
            0.1,
            False,
            (0.9, 0.0, 0.0),
        ),
    ],
)
def test_training_defaults_follow_the_text_encoder(encoder, epochs, schedule, warmup, lstm, recipe, tmp_path):
    args = train_acn.parse_args(["--dataset_name", str(tmp_path), "--output_dir", str(tmp_path), *encoder])
    assert (args.num_train_epochs, args.lr_scheduler_type, args.warmup_ratio, args.use_lstm) == (
        epochs,
        schedule,
        warmup,
        lstm,
    )
    assert (
        args.layerwise_lr_decay,
        args.mention_replacement,
        args.fgm_epsilon,
    ) == recipe  # issue 26's study, chosen on dev
    assert args.num_warmup_steps is None  # the share becomes steps once the data loader gives the epoch's steps


def test_pretrained_embeddings_initialise_and_extend_the_vocabulary(corpus, tmp_path):
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("obama " + " ".join(["0.5"] * 16) + "\nzebra " + " ".join(["-0.5"] * 16) + "\n")
    train_acn.main(
        [
            "--dataset_name",
            str(corpus),
            "--output_dir",
            str(tmp_path / "out"),
            *TINY_FLAGS,
            "--num_train_epochs",
            "1",
            "--embeddings",
            str(vectors),
            "--checkpointing_steps",
            "none",
            "--learning_rate",
            "0",
        ]
    )
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out", trust_remote_code=True)
    model = AutoModelForTokenClassification.from_pretrained(tmp_path / "out", trust_remote_code=True)
    embeddings = model.get_input_embeddings().weight
    for word, value in (("obama", 0.5), ("zebra", -0.5)):  # a corpus word, and a word only the file has
        assert torch.equal(embeddings[tokenizer.get_vocab()[word]], torch.full((16,), value))


def test_images_as_pixels_need_explicit_vgg_weights(corpus, tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 32), (255, 0, 0)).save(tmp_path / "101.jpg")
    with pytest.raises(ValueError, match="images are read as pixels but no VGG-16 weights were given"):
        train_acn.main(
            [
                "--dataset_name",
                str(corpus),
                "--image_dir",
                str(tmp_path),
                "--output_dir",
                str(tmp_path / "out"),
                *TINY_FLAGS,
            ]
        )
