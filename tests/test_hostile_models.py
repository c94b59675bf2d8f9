"""Models that a careless user or an attacker can hand over, and tweets that cost too much: a config.json with values
of the wrong type or label maps that disagree, and a 30,000-word tweet. Each is refused naming the key or the length,
or runs in memory linear in its length. Each test is a row of docs/reliability.md's table."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from modeling_acn import AcnConfig, AcnForTokenClassification

from .conftest import BIO_LABELS, TINY_SIZES, make_batch
from .pipeline_fixtures import striped_image, tiny_pipeline

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.bad_input(
    'a config.json with a value of the wrong type (`"hidden_size": "100"`, `"use_image": "false"`, ...)',
    '`ValueError` naming the key and the value (`"false"` is not read as true)',
)
@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("hidden_size", "100", "an integer or null"),
        ("use_image", "false", "true or false"),
        ("vocab_size", True, "an integer"),
        ("dropout", "0.5", "a number"),
        ("decoder", 1, "a string"),
        ("use_lstm", "yes", "true, false or null"),
        ("char_kernel_sizes", "234", "a list of integers"),
    ],
)
def test_a_config_value_of_the_wrong_type_is_refused_naming_the_key(tmp_path, key, value, expected):
    config = AcnConfig(**TINY_SIZES, id2label=dict(enumerate(BIO_LABELS))).to_dict()
    config[key] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"{key} must be {expected}, got {value!r}"):
        AcnConfig.from_pretrained(tmp_path)


@pytest.mark.bad_input(
    "a config.json whose `id2label` has a gap, whose `label2id` contradicts it, or that has no label map",
    "`ValueError` naming the missing ids, the differing pairs, or `id2label` (never Twitter-2015's labels silently)",
)
@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"id2label": {"0": "O", "2": "B-PER"}, "label2id": {"O": 0, "B-PER": 2}},
            r"without gaps, got ids \[0, 2\] \(missing \[1\]\)",
        ),
        (
            {"label2id": {"O": 1, "B-PER": 0, "I-PER": 2, "B-LOC": 3, "I-LOC": 4}},
            r"label2id must be the inverse of id2label; they differ on",
        ),
        ({"id2label": {"0": "O", "1": "O"}, "label2id": {"O": 1}}, r"distinct non-empty label names, got \['O', 'O'\]"),
        ({"id2label": None, "label2id": None}, r"the configuration has no id2label"),
    ],
)
def test_label_maps_are_complete_and_consistent(tmp_path, change, message):
    config = AcnConfig(**TINY_SIZES, id2label=dict(enumerate(BIO_LABELS))).to_dict()
    config.update(change)
    config = {key: value for key, value in config.items() if value is not None}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        AcnConfig.from_pretrained(tmp_path)


@pytest.mark.bad_input(
    "a tweet with an image longer than `max_image_words` (256), e.g. 50,000 words",
    "that row's error, naming its length, before the image is read; without an image any length is tagged",
)
def test_a_long_tweet_with_an_image_is_refused_naming_its_length(tiny_config):
    pipe = tiny_pipeline()
    text = " ".join(["Obama"] * 300)
    with pytest.raises(
        ValueError, match=r"the tweet has 300 words and an image; co-attention reads at most max_image_words=256"
    ):
        pipe(text, image=striped_image())
    assert len(pipe(text, return_tags=True)["tags"]) == 300  # the text path takes it
    model = AcnForTokenClassification(tiny_config).eval()
    batch = make_batch([300, 4], word_len=3)
    batch.pop("labels")
    with pytest.raises(ValueError, match=r"tweet 0 has 300 words and an image"):
        model(**batch)
    batch["image_mask"] = torch.tensor([False, True])
    assert model(**batch).logits.shape[:2] == (2, 300)  # the long one without its image


def test_max_image_words_is_a_validated_setting():
    assert AcnConfig().max_image_words == 256
    with pytest.raises(ValueError, match=r"max_image_words must be a positive integer, got 0"):
        AcnConfig(max_image_words=0)
    assert AcnConfig(max_image_words=512).max_image_words == 512


@pytest.mark.slow
@pytest.mark.bad_input(
    "a 30,000-word tweet without an image",
    "tagged in memory linear in its length (the text path allocated a words x words attention map: 3.6 GB here)",
)
def test_a_30000_word_tweet_without_an_image_costs_memory_linear_in_its_length():
    probe = textwrap.dedent(
        """
        import resource, sys
        from tests.pipeline_fixtures import tiny_pipeline
        pipe = tiny_pipeline()
        pipe("Obama visits Paris")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result = pipe(" ".join(["Obama", "visits", "Paris"] * 10000), return_tags=True)
        assert len(result["tags"]) == 30000
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
        """
    )
    finished = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    growth_mib = int(finished.stdout.split()[-1])
    assert growth_mib < 1500, (
        f"the 30,000-word tweet took {growth_mib} MiB more"
    )  # 30000^2 float32 zeros alone: 3433 MiB


def test_attention_maps_are_only_made_when_asked_for(tiny_config, text_batch):
    model = AcnForTokenClassification(tiny_config).eval()
    text_batch.pop("labels")
    text_batch["image_mask"] = torch.tensor([True, False, True, False])
    plain = model(**text_batch)
    assert plain.textual_attentions is None and plain.visual_attentions is None
    explained = model(**text_batch, output_attentions=True)
    torch.testing.assert_close(explained.logits, plain.logits)
    assert explained.textual_attentions.shape == (4, 5, 5) and not explained.textual_attentions[1].any()


def test_crf_marginals_take_time_linear_in_the_tweet_length():
    """The marginals are the gradient of the log-partition; indexing each step's emissions made that backward
    quadratic (an 18,000-word tweet took 3 minutes)."""
    import time

    from modeling_acn import AcnCrf

    crf = AcnCrf(5)
    for parameter in crf.parameters():  # AcnCrf's parameters start empty; the model's _init_weights fills them
        torch.nn.init.uniform_(parameter, -0.1, 0.1)

    def seconds(length: int) -> float:
        emissions = torch.randn(1, length, 5, requires_grad=True)
        mask = torch.ones(1, length, dtype=torch.bool)
        started = time.perf_counter()
        (gradient,) = torch.autograd.grad(crf.log_partition(emissions, mask).sum(), emissions)
        assert torch.allclose(gradient.sum(-1), torch.ones(1, length), atol=1e-3)  # each word's marginals sum to 1
        return time.perf_counter() - started

    seconds(500)  # warm-up
    small, large = min(seconds(2000) for _ in range(2)), min(seconds(8000) for _ in range(2))
    assert large < 10 * small, f"4x the words took {large / small:.1f}x the time"  # quadratic: 16x
