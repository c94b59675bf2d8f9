"""Shared fixtures: a tiny ACN configuration and a padded batch with image features."""

import pytest
import torch

from modeling_acn import AcnConfig

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


@pytest.fixture
def tiny_config():
    return AcnConfig(**TINY_SIZES, id2label=dict(enumerate(BIO_LABELS)))


def make_batch(lengths, seq_len=None, word_len=5, num_labels=len(BIO_LABELS), seed=0):
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
