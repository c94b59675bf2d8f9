"""Checkpoint averaging (`train_acn.py --average_last_epochs`): the mean against brute force, and the run that keeps
whichever of the best epoch and the averages of the last epochs scores best on dev."""

import json

import pytest
import torch
from safetensors.torch import load_file

from acn_mner.averaging import EPOCH_WEIGHTS_DIR, average_state_dicts

from .corpus_fixtures import write_corpus


def test_the_mean_matches_stacking_and_keeps_equal_tensors_bit_for_bit():
    generator = torch.Generator().manual_seed(0)
    frozen = torch.randn(7, 3, generator=generator)
    states = [
        {"w": torch.randn(4, 5, generator=generator), "frozen": frozen.clone(), "steps": torch.tensor(number)}
        for number in range(3)
    ]
    averaged = average_state_dicts(states)
    expected = torch.stack([state["w"].double() for state in states]).mean(0).float()
    torch.testing.assert_close(averaged["w"], expected, rtol=0, atol=1e-7)
    assert torch.equal(averaged["frozen"], frozen)  # a sum divided by 3 would round some values
    assert averaged["steps"].item() == 2  # integer buffers: the last state's
    assert average_state_dicts(states[:1])["w"].equal(states[0]["w"])


def test_mismatched_state_dicts_are_refused_with_the_key():
    with pytest.raises(ValueError, match="other keys than the first"):
        average_state_dicts([{"a": torch.zeros(1)}, {"b": torch.zeros(1)}])
    with pytest.raises(ValueError, match="'a' has different shapes"):
        average_state_dicts([{"a": torch.zeros(1)}, {"a": torch.zeros(2)}])
    with pytest.raises(ValueError, match="at least one"):
        average_state_dicts([])


def train_four_epochs(tiny_bert, tmp_path):
    from acn_mner import train as train_acn

    tweets = [(str(index), [("Obama", "B-PER"), ("visits", "O"), ("Paris", "B-LOC")]) for index in range(3)]
    tweets += [("9", [("Merkel", "B-PER"), ("in", "O"), ("Berlin", "B-LOC"), ("today", "O")])]
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
            "--num_train_epochs",
            "4",
            "--per_device_train_batch_size",
            "2",
            "--seed",
            "1",
            "--patience",
            "10",
            "--average_last_epochs",
            "3",
        ]
    )
    return output, json.loads((output / "all_results.json").read_text())


def kept_weights(output, epoch):
    return load_file(output / "checkpoints" / EPOCH_WEIGHTS_DIR / f"epoch_{epoch}" / "model.safetensors")


def test_a_run_keeps_the_last_epochs_and_scores_their_averages_on_dev(tiny_bert, tmp_path):
    output, results = train_four_epochs(tiny_bert, tmp_path)
    kept = sorted(path.name for path in (output / "checkpoints" / EPOCH_WEIGHTS_DIR).iterdir())
    assert kept == ["epoch_2", "epoch_3", "epoch_4"]  # the last three; epoch 1's were dropped
    assert sorted(results["average_dev_f1"]) == ["1", "2", "3"]
    best = max(results["average_dev_f1"], key=lambda count: (results["average_dev_f1"][count], -int(count)))
    assert results["averaged_epochs"] == int(best)  # ties go to the best single epoch, then to fewer epochs
    card = (output / "model_card.md").read_text()
    assert "layer-wise learning-rate decay 0.9, " in card  # the default for a pretrained encoder, named on the card
    assert "last epochs averaged at most 3" in card


def test_an_average_that_wins_on_dev_becomes_the_saved_model(tiny_bert, tmp_path, monkeypatch):
    from acn_mner import train as train_acn

    # dev F1 of epochs 1-4, then of the means of the last 2 and 3 epochs: the mean of three wins
    dev_f1 = iter([0.5, 0.6, 0.55, 0.5, 0.58, 0.7])
    real = train_acn.evaluate_split

    def scripted(accelerator, model, loader, split, metric):
        scores, predictions = real(accelerator, model, loader, split, metric)
        return {**scores, "overall_f1": next(dev_f1, scores["overall_f1"])}, predictions

    monkeypatch.setattr(train_acn, "evaluate_split", scripted)
    output, results = train_four_epochs(tiny_bert, tmp_path)
    assert results["averaged_epochs"] == 3 and results["best_epoch"] == 2
    assert results["average_dev_f1"] == {"1": 0.6, "2": 0.58, "3": 0.7}
    assert "kept: the mean of the last 3 epochs' weights" in (output / "model_card.md").read_text()
    expected = average_state_dicts([kept_weights(output, epoch) for epoch in (2, 3, 4)])
    final = load_file(output / "model.safetensors")
    assert final.keys() == expected.keys()
    for key in final:
        torch.testing.assert_close(final[key], expected[key], rtol=0, atol=0)


def test_layerwise_decay_gives_each_encoder_depth_its_rate(tiny_bert):
    from argparse import Namespace

    from transformers import AutoConfig

    from acn_mner.train import build_optimizer
    from modeling_acn import AcnConfig, AcnForTokenClassification

    from .encoder_fixtures import make_processor

    tokenizer = make_processor(tiny_bert).tokenizer
    three_layers = {**AutoConfig.from_pretrained(tiny_bert).to_dict(), "num_hidden_layers": 3}
    config = AcnConfig(
        text_encoder=str(tiny_bert),
        text_config=three_layers,
        text_encoder_window=tokenizer.subword_window,
        vocab_size=len(tokenizer),
        char_vocab_size=tokenizer.char_vocab_size,
        char_num_filters=4,
    )
    model = AcnForTokenClassification(config)
    args = Namespace(
        learning_rate=1e-3, encoder_learning_rate=1e-4, layerwise_lr_decay=0.5, optimizer="adam", weight_decay=0.0
    )
    optimizer = build_optimizer(model, args)
    rate = {id(parameter): group["lr"] for group in optimizer.param_groups for parameter in group["params"]}
    for name, parameter in model.named_parameters():  # brute force: the depth read off each name by hand
        if not parameter.requires_grad:  # the frozen image trunk
            assert id(parameter) not in rate
            continue
        if ".subword_encoder." not in name:
            expected = 1e-3
        elif ".embeddings." in name:
            expected = 1e-4 * 0.5**3
        else:
            layer = int(name.split(".layer.")[1].split(".")[0])
            expected = 1e-4 * 0.5 ** (2 - layer)
        assert rate[id(parameter)] == pytest.approx(expected), name
    assert len(rate) == sum(1 for parameter in model.parameters() if parameter.requires_grad)
