"""Training recipes of issue 26's study: mention replacement (`--mention_replacement`) checked against the corpus's
own mentions, and re-initialised top encoder layers (`--reinit_top_layers`) checked weight by weight."""

import json
from collections import Counter

import pytest
import torch
from seqeval.metrics.sequence_labeling import get_entities

from modeling_acn import AcnMentionReplacement

from .corpus_fixtures import write_corpus

NAMES = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
ID = {name: index for index, name in enumerate(NAMES)}
TRAIN = [
    (["Barack", "Obama", "visits", "Paris"], ["B-PER", "I-PER", "O", "B-LOC"]),
    (["Merkel", "in", "New", "York", "City"], ["B-PER", "O", "B-LOC", "I-LOC", "I-LOC"]),
    (["the", "UN", "says"], ["O", "B-ORG", "O"]),
    (["I-LOC", "lone", "inside"], ["O", "O", "I-PER"]),  # an I- without B- is a mention too, as seqeval chunks it
]


def replacement(probability):
    return AcnMentionReplacement(
        [words for words, _ in TRAIN],
        [[ID[tag] for tag in tags] for _, tags in TRAIN],
        dict(enumerate(NAMES)),
        probability,
    )


def row(words, tags):
    return {"tokens": words, "ner_tags": [ID[tag] for tag in tags], "image_mask": True}


def test_the_bank_holds_every_training_mention_by_type():
    bank = replacement(1.0).mentions
    assert bank == {
        "PER": [["Barack", "Obama"], ["Merkel"], ["inside"]],
        "LOC": [["Paris"], ["New", "York", "City"]],
        "ORG": [["UN"]],
    }


def test_every_mention_is_replaced_by_one_of_its_type_and_the_rest_is_kept():
    augment = replacement(1.0)
    bank = augment.mentions
    torch.manual_seed(0)
    source = row(
        ["RT", "Obama", "and", "Merkel", "meet", "at", "the", "UN", "in", "Paris"],
        ["O", "B-PER", "O", "B-PER", "O", "O", "O", "B-ORG", "O", "B-LOC"],
    )
    drawn = Counter()
    for _ in range(200):
        out = augment(source)
        tags = [NAMES[tag] for tag in out["ner_tags"]]
        assert len(tags) == len(out["tokens"])
        spans = get_entities(tags)
        assert [kind for kind, _, _ in spans] == ["PER", "PER", "ORG", "LOC"]  # the same types, in order
        for kind, start, end in spans:  # brute force: each new mention is a training mention of its type, B- then I-
            assert out["tokens"][start : end + 1] in bank[kind]
            assert tags[start : end + 1] == [f"B-{kind}"] + [f"I-{kind}"] * (end - start)
            drawn[(kind, " ".join(out["tokens"][start : end + 1]))] += 1
        outside = [word for index, word in enumerate(out["tokens"]) if tags[index] == "O"]
        assert outside == ["RT", "and", "meet", "at", "the", "in"]
        assert out["image_mask"] is True
    assert {mention for kind, mention in drawn if kind == "PER"} == {"Barack Obama", "Merkel", "inside"}
    assert {mention for kind, mention in drawn if kind == "LOC"} == {"Paris", "New York City"}
    assert source["tokens"][1] == "Obama"  # the row itself is not changed


def test_each_mention_is_replaced_with_the_given_probability():
    augment = replacement(0.3)
    torch.manual_seed(1)
    source = row(["Obama"], ["B-PER"])
    changed = sum(augment(source)["tokens"] != ["Obama"] for _ in range(3000))
    # a replacement draws Obama's own mention with probability 0; each draw changes the row with 0.3
    assert 0.3 * 3000 - 4 * (3000 * 0.3 * 0.7) ** 0.5 < changed < 0.3 * 3000 + 4 * (3000 * 0.3 * 0.7) ** 0.5
    assert replacement(0.0)(source) is source
    unseen = {"tokens": ["Acme"], "ner_tags": [ID["B-ORG"]]}
    only_people = AcnMentionReplacement([["Obama"]], [[ID["B-PER"]]], dict(enumerate(NAMES)), 1.0)
    assert only_people(unseen) is unseen  # no ORG mention to draw: kept


def test_bad_settings_are_refused_with_the_value():
    with pytest.raises(ValueError, match="in \\[0, 1\\], got 1.5"):
        replacement(1.5)
    with pytest.raises(ValueError, match=r"lacks \['I-LOC'\]"):
        AcnMentionReplacement([["Paris"]], [[1]], {0: "O", 1: "B-LOC"}, 0.5)


def spy(monkeypatch, owner, name, calls: Counter, outputs: list | None = None):
    """Counts the calls of `owner.name` in `calls[name]`; with `outputs`, also keeps each call's arguments and
    result."""
    real = getattr(owner, name)

    def counted(*args, **kwargs):
        calls[name] += 1
        result = real(*args, **kwargs)
        if outputs is not None:
            outputs.append((*args, result))
        return result

    monkeypatch.setattr(owner, name, counted)


def test_a_run_with_every_recipe_flag_trains_and_names_them_on_the_card(tiny_bert, tmp_path, capsys, monkeypatch):
    from acn_mner import recipes
    from acn_mner import train as train_acn

    calls = Counter()
    spy(monkeypatch, train_acn, "reinitialise_top_layers", calls)
    spy(monkeypatch, train_acn, "rdrop_loss", calls)
    spy(monkeypatch, recipes.FgmPerturbation, "perturb", calls)
    spy(monkeypatch, AcnMentionReplacement, "__call__", calls)

    tweets = [(str(index), [("Obama", "B-PER"), ("visits", "O"), ("Paris", "B-LOC")]) for index in range(3)]
    tweets += [("9", [("Angela", "B-PER"), ("Merkel", "I-PER"), ("in", "O"), ("Berlin", "B-LOC")])]
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
            "1",
            "--per_device_train_batch_size",
            "2",
            "--mention_replacement",
            "0.5",
            "--reinit_top_layers",
            "1",
            "--fgm_epsilon",
            "1",
            "--rdrop_alpha",
            "2",
        ]
    )
    assert 0 <= json.loads((output / "all_results.json").read_text())["test_overall_f1"] <= 1
    assert calls["reinitialise_top_layers"] == 1 and calls["rdrop_loss"] == calls["perturb"] == 2  # two batches
    assert calls["__call__"] == 4  # each training row, once
    card = (output / "model_card.md").read_text()
    for setting in (
        "mention replacement 0.5",
        "top encoder layers re-initialised 1",
        "FGM epsilon 1.0",
        "R-Drop alpha 2.0",
    ):
        assert setting in card
    plain = tmp_path / "plain"
    train_acn.main(
        [
            "--dataset",
            str(corpus),
            "--output_dir",
            str(plain),
            "--text_encoder",
            str(tiny_bert),
            "--num_train_epochs",
            "1",
        ]
    )
    plain_card = (plain / "model_card.md").read_text()
    assert (
        "mention replacement 0.3" in plain_card and "FGM epsilon 1.0" in plain_card
    )  # the defaults with a pretrained encoder
    assert not [setting for setting in ("re-initialised", "R-Drop") if setting in plain_card]  # off: unnamed
    capsys.readouterr()
    with pytest.raises(SystemExit):  # a trained encoder is not started afresh
        train_acn.main(
            [
                "--dataset",
                str(corpus),
                "--output_dir",
                str(tmp_path / "again"),
                "--model_name_or_path",
                str(plain),
                "--reinit_top_layers",
                "1",
            ]
        )
    assert "--model_name_or_path trains a trained one further" in capsys.readouterr().err


def three_layer_model(tiny_bert):
    from transformers import AutoConfig

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
    return AcnForTokenClassification(config)


def test_reinit_changes_exactly_the_top_layers_to_bert_initialisation(tiny_bert):
    from acn_mner.train import reinitialise_top_layers

    model = three_layer_model(tiny_bert)
    with torch.no_grad():  # pretrained-looking weights: far from BERT's initialisation
        for parameter in model.parameters():
            parameter.fill_(3.0)
    before = {name: parameter.clone() for name, parameter in model.named_parameters()}
    torch.manual_seed(0)
    reinitialise_top_layers(model.acn.text_encoder.subword_encoder, 2)
    std = model.config.text_config.initializer_range
    for name, parameter in model.named_parameters():
        top = ".subword_encoder.encoder.layer.1." in name or ".subword_encoder.encoder.layer.2." in name
        if not top:
            assert torch.equal(parameter, before[name]), name
        elif "LayerNorm.weight" in name:
            assert torch.equal(parameter, torch.ones_like(parameter)), name
        elif name.endswith("bias"):
            assert torch.equal(parameter, torch.zeros_like(parameter)), name
        else:  # a linear weight drawn from normal(0, std)
            assert parameter.mean().abs() < 4 * std / parameter.numel() ** 0.5 + 1e-3, name
            assert parameter.std().item() == pytest.approx(std, rel=0.35), name
    with pytest.raises(ValueError, match="--reinit_top_layers 4: the text encoder has 3 layers"):
        reinitialise_top_layers(model.acn.text_encoder.subword_encoder, 4)


def test_reinit_refuses_layers_it_does_not_know_and_skips_missing_biases():
    from types import SimpleNamespace

    from acn_mner.train import reinitialise_top_layers

    class Encoder(torch.nn.Module):
        def __init__(self, layers):
            super().__init__()
            self.config = SimpleNamespace(initializer_range=0.5)
            self.layer = torch.nn.ModuleList(layers)

    biasless = Encoder([torch.nn.Linear(3, 3, bias=False), torch.nn.Linear(3, 3, bias=False)])
    torch.nn.init.constant_(biasless.layer[0].weight, 7.0)
    reinitialise_top_layers(biasless, 1)
    assert (biasless.layer[0].weight == 7.0).all() and (biasless.layer[1].weight.abs() < 7.0).all()
    with pytest.raises(ValueError, match="not RMSNorm's \\(layer 1\\)"):
        reinitialise_top_layers(Encoder([torch.nn.RMSNorm(3), torch.nn.RMSNorm(3)]), 1)
    nested = Encoder([torch.nn.Module(), torch.nn.Module()])
    for block in nested.layer:
        block.layer = torch.nn.ModuleList([torch.nn.Linear(2, 2)])  # T5's block.N.layer.M
    with pytest.raises(ValueError, match="one numbered list of encoder layers"):
        reinitialise_top_layers(nested, 1)


def test_reinit_is_refused_without_a_pretrained_encoder(tmp_path, capsys):
    from acn_mner import train as train_acn

    with pytest.raises(SystemExit):
        train_acn.main(["--dataset", str(tmp_path), "--output_dir", str(tmp_path / "out"), "--reinit_top_layers", "1"])
    assert "cnn-bilstm has none" in capsys.readouterr().err


def test_fgm_moves_the_embeddings_along_their_gradient_and_back_bit_for_bit():
    from acn_mner.recipes import FgmPerturbation

    embedding = torch.nn.Embedding(5, 3)
    original = embedding.weight.detach().clone()
    fgm = FgmPerturbation(embedding, epsilon=0.5)
    assert not fgm.perturb()  # no gradient yet: nothing moves
    (embedding(torch.tensor([1, 1, 3])) ** 2).sum().backward()
    grad = embedding.weight.grad.clone()
    assert fgm.perturb()
    expected = original + 0.5 * grad / grad.norm()  # brute force: the FGM step
    torch.testing.assert_close(embedding.weight.detach(), expected)
    assert torch.equal(embedding.weight[[0, 2, 4]], original[[0, 2, 4]])  # rows without gradient stay
    assert (embedding.weight.detach() - original).norm().item() == pytest.approx(0.5)
    fgm.restore()
    assert torch.equal(embedding.weight.detach(), original)
    embedding.weight.grad.zero_()
    assert not fgm.perturb()  # a zero gradient has no direction
    with pytest.raises(ValueError, match="positive, got 0"):
        FgmPerturbation(embedding, 0)


def test_fgm_under_gradient_accumulation_steps_along_this_batchs_gradient_only():
    from acn_mner.recipes import FgmPerturbation

    embedding = torch.nn.Embedding(5, 3)
    fgm = FgmPerturbation(embedding, epsilon=1.0)
    fgm.start()
    (embedding(torch.tensor([0, 1])) ** 2).sum().backward()  # micro-batch 1
    assert fgm.perturb()
    fgm.restore()
    fgm.start()  # micro-batch 2: its gradient adds to what batch 1 left
    original = embedding.weight.detach().clone()
    before = embedding.weight.grad.clone()
    (embedding(torch.tensor([3])) * 2).sum().backward()
    own = embedding.weight.grad - before  # brute force: batch 2's gradient alone
    assert fgm.perturb()
    torch.testing.assert_close(embedding.weight.detach(), original + own / own.norm())
    assert torch.equal(embedding.weight[[0, 1]], original[[0, 1]])  # batch 1's rows do not move
    fgm.restore()


def test_symmetric_kl_matches_the_formula():
    from acn_mner.recipes import symmetric_kl

    generator = torch.Generator().manual_seed(0)
    first, second = torch.randn(6, 4, generator=generator), torch.randn(6, 4, generator=generator)
    p, q = first.softmax(-1), second.softmax(-1)
    expected = ((p * (p / q).log()).sum(-1) + (q * (q / p).log()).sum(-1)).mean() / 2
    torch.testing.assert_close(symmetric_kl(first, second), expected)
    assert symmetric_kl(first, first).item() == pytest.approx(0, abs=1e-7)


def test_rdrop_without_dropout_is_the_plain_loss_and_with_it_adds_a_positive_term(tiny_bert):
    from acn_mner.recipes import rdrop_loss

    from .encoder_fixtures import make_processor

    model = three_layer_model(tiny_bert)
    processor = make_processor(tiny_bert)
    batch = dict(
        processor([["Obama", "visits", "Paris"], ["Merkel"]], labels=[[1, 0, 3], [1]], is_split_into_words=True)
    )
    model.eval()  # no dropout: the two runs agree
    torch.testing.assert_close(rdrop_loss(model, batch, alpha=5.0), model(**batch).loss)
    model.train()
    torch.manual_seed(0)
    first, second = model(**batch), model(**batch)
    torch.manual_seed(0)
    words = batch["labels"] != -100
    first_log, second_log = first.logits[words].log_softmax(-1), second.logits[words].log_softmax(-1)
    kl = (
        (first_log.exp() * (first_log - second_log)).sum(-1) + (second_log.exp() * (second_log - first_log)).sum(-1)
    ).mean() / 2
    torch.testing.assert_close(rdrop_loss(model, batch, alpha=2.0), (first.loss + second.loss) / 2 + 2.0 * kl)
    assert kl > 0


def test_fgm_adds_the_gradient_of_the_loss_at_the_moved_embeddings(tiny_bert, tmp_path, monkeypatch):
    """One training step with --fgm_epsilon against the same step done by hand (dropout off, so passes repeat)."""
    from argparse import Namespace

    from accelerate import Accelerator

    from acn_mner import train as train_acn

    from .encoder_fixtures import make_processor

    torch.manual_seed(0)
    model = three_layer_model(tiny_bert)
    model.config.dropout = 0.0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    processor = make_processor(tiny_bert)
    batch = dict(
        processor([["Obama", "visits", "Paris"], ["Merkel"]], labels=[[1, 0, 3], [1]], is_split_into_words=True)
    )
    weight = model.get_input_embeddings().weight
    # by hand: clean gradient g, then the gradient at weight + 0.7 g / |g|, summed
    model.zero_grad()
    model(**batch).loss.backward()
    clean = {name: parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.grad is not None}
    original = weight.detach().clone()
    with torch.no_grad():
        weight.add_(0.7 * clean[next(name for name, p in model.named_parameters() if p is weight)] / weight.grad.norm())
    model.zero_grad()
    model(**batch).loss.backward()
    expected = {
        name: clean[name] + parameter.grad for name, parameter in model.named_parameters() if parameter.grad is not None
    }
    with torch.no_grad():
        weight.copy_(original)
    model.zero_grad()
    # the training loop's step, stopped before the optimiser moves anything
    captured = {}

    class Stop(Exception):
        pass

    class Recorder:
        def step(self):
            captured.update(
                {
                    name: parameter.grad.clone()
                    for name, parameter in model.named_parameters()
                    if parameter.grad is not None
                }
            )
            raise Stop

    class Loader(list):
        def set_epoch(self, epoch):
            pass

        collate_fn = Namespace(start=lambda epoch, batch: None)

    args = Namespace(fgm_epsilon=0.7, rdrop_alpha=0.0, max_grad_norm=0, gradient_accumulation_steps=1)
    monkeypatch.setattr(train_acn, "remaining_batches", lambda accelerator, loader, done: iter(loader))
    state = Namespace(epoch=0, epoch_batches=0)
    with pytest.raises(Stop):
        train_acn.train_epoch(Accelerator(cpu=True), model, Loader([batch]), Recorder(), None, args, state, tmp_path)
    assert captured.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(captured[name], expected[name], rtol=1e-5, atol=1e-6)
    assert torch.equal(weight.detach(), original)  # the embeddings are back


WNUT17_TWEETS = [  # WNUT-17's six types, none of them Twitter-2015's, in tweets the recipe has never seen
    (
        "1",
        [
            ("new", "O"),
            ("Taylor", "B-person"),
            ("Swift", "I-person"),
            ("album", "O"),
            ("on", "O"),
            ("Spotify", "B-product"),
        ],
    ),
    ("2", [("Nike", "B-corporation"), ("opens", "O"), ("in", "O"), ("Lagos", "B-location")]),
    (
        "3",
        [
            ("watching", "O"),
            ("Star", "B-creative-work"),
            ("Wars", "I-creative-work"),
            ("with", "O"),
            ("Arsenal", "B-group"),
        ],
    ),
    (
        "4",
        [
            ("Drake", "B-person"),
            ("at", "O"),
            ("Madison", "B-location"),
            ("Square", "I-location"),
            ("Garden", "I-location"),
        ],
    ),
]


def test_the_default_recipe_carries_to_a_corpus_with_other_entity_types_unchanged(tiny_bert, tmp_path, monkeypatch):
    """The --text_encoder defaults (decay 0.9, mention replacement 0.3, FGM 1.0), no setting changed, on WNUT-17's
    types."""
    from acn_mner import recipes
    from acn_mner import train as train_acn
    from modeling_acn import AcnForTokenClassification

    calls, replaced = Counter(), []  # replaced: (augmentation, row, its output) per call
    spy(monkeypatch, AcnMentionReplacement, "__call__", calls, outputs=replaced)
    spy(monkeypatch, recipes.FgmPerturbation, "perturb", calls)
    corpus = write_corpus(
        tmp_path / "corpus", {"train": WNUT17_TWEETS, "validation": WNUT17_TWEETS, "test": WNUT17_TWEETS}
    )
    output = tmp_path / "out"
    train_acn.main(
        [
            "--dataset_name",
            str(corpus),
            "--output_dir",
            str(output),
            "--text_encoder",
            str(tiny_bert),
            "--num_train_epochs",
            "3",
            "--per_device_train_batch_size",
            "2",
            "--seed",
            "0",
        ]
    )

    types = {"person", "product", "corporation", "location", "creative-work", "group"}
    model = AcnForTokenClassification.from_pretrained(output)
    assert set(model.config.id2label.values()) == {"O"} | {f"{prefix}-{kind}" for kind in types for prefix in "BI"}
    assert calls["perturb"] == 3 * 2  # FGM on every step: two batches an epoch
    assert len(replaced) == 3 * len(WNUT17_TWEETS)  # every training row, every epoch
    training_mentions = set()
    for _, tagged in WNUT17_TWEETS:
        words, tags = [word for word, _ in tagged], [tag for _, tag in tagged]
        training_mentions |= {(kind, " ".join(words[start : end + 1])) for kind, start, end in get_entities(tags)}
    assert set(replaced[0][0].mentions) == types
    assert any(out["tokens"] != row["tokens"] for _, row, out in replaced)  # some mention was swapped
    for (
        augment,
        _,
        out,
    ) in replaced:  # brute force: each mention after replacement is a training mention of its own type
        for kind, start, end in augment.spans(out["ner_tags"]):
            assert (kind, " ".join(out["tokens"][start : end + 1])) in training_mentions
    results = json.loads((output / "all_results.json").read_text())
    assert all("f1" in results[f"test_{kind}"] for kind in types)  # scored per type, whatever the types are
    card = (output / "model_card.md").read_text()
    assert "mention replacement 0.3" in card and "FGM epsilon 1.0" in card
