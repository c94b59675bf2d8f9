"""torch.export of ACN: the exported program matches eager at other batch sizes and lengths than the example it was
traced on, on the text path (paper encoder and a pretrained one) and with images (cached features, pixels),
and it keeps the input checks as assertions."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from acn_mner.onnx_export import dynamic_shapes, example_inputs
from modeling_acn import AcnConfig, AcnForTokenClassification
from modeling_acn.torch_export_acn import bilstm_for_export

from .conftest import BIO_LABELS, TINY_SIZES, make_batch
from .encoder_fixtures import make_model, make_processor

# (words per tweet, characters per word, image_mask): two batches of other sizes than export's example (2 x 3 x 6)
BATCHES = (([2, 7, 1], 6, [True, False, True]), ([4, 3, 5, 1, 2], 9, [False, False, False, False, False]))


def tiny_model(**config) -> AcnForTokenClassification:
    torch.manual_seed(0)
    return AcnForTokenClassification(AcnConfig(**TINY_SIZES, **config, id2label=dict(enumerate(BIO_LABELS)))).eval()


def export(model):
    inputs = example_inputs(model.config)
    program = torch.export.export(model, args=(), kwargs=inputs, dynamic_shapes=dynamic_shapes(model.config, inputs))
    return program.module()


def text_inputs(lengths, word_len, seed=1):
    batch = make_batch(lengths, word_len=word_len, seed=seed)
    return {name: batch[name] for name in ("input_ids", "char_ids", "attention_mask")}


def assert_same_logits(program, model, inputs):
    with torch.no_grad():
        expected = model(**inputs).logits  # (batch, seq_len, num_labels)
        got = program(**inputs).logits
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_the_export_bilstm_equals_the_packed_one():
    torch.manual_seed(0)
    lstm = nn.LSTM(6, 4, batch_first=True, bidirectional=True)
    words = torch.randn(4, 7, 6)  # (batch, seq_len, features)
    lengths = torch.tensor([2, 7, 1, 5])
    packed = pack_padded_sequence(words, lengths, batch_first=True, enforce_sorted=False)
    expected, _ = pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=7)
    with torch.no_grad():
        torch.testing.assert_close(bilstm_for_export(lstm, words, lengths), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("use_image", [False, True], ids=["text", "image-features"])
def test_the_paper_model_exports_with_dynamic_batch_and_lengths(use_image):
    model = tiny_model(use_image=use_image)
    program = export(model)
    for lengths, word_len, image_mask in BATCHES:
        inputs = text_inputs(lengths, word_len)
        if use_image:  # the tweets without an image have NaN features: never read
            features = torch.rand(len(lengths), 49, 512) * 3
            features[~torch.tensor(image_mask)] = float("nan")
            inputs.update(image_features=features, image_mask=torch.tensor(image_mask))
        assert_same_logits(program, model, inputs)


@pytest.mark.parametrize("use_image", [False, True], ids=["text", "image-features"])
def test_acn_on_a_pretrained_encoder_exports_with_dynamic_batch_and_lengths(tiny_bert, use_image):
    processor = make_processor(tiny_bert)
    model = make_model(tiny_bert, processor, use_image=use_image)
    program = export(model)
    for texts in (["Merkel meets @user in Berlin", "Obama", "RT : Paris"], ["Obama visits Paris", "hi"]):
        inputs = dict(processor(texts))
        inputs["char_ids"] = nn.functional.pad(inputs["char_ids"], (0, 2))  # padding characters change nothing
        if use_image:
            inputs.update(image_features=torch.rand(len(texts), 49, 512), image_mask=torch.arange(len(texts)) % 2 == 0)
        assert_same_logits(program, model, inputs)


def test_the_exported_program_keeps_the_input_checks():
    program = export(tiny_model(use_image=False))
    inputs = text_inputs([3, 2], 6)
    inputs["attention_mask"] = torch.tensor([[1, 1, 1], [0, 1, 1]])
    with pytest.raises(RuntimeError, match="attention_mask must be left-aligned"):
        program(**inputs)
    inputs["attention_mask"] = torch.tensor([[1, 1, 1], [0, 0, 0]])
    with pytest.raises(RuntimeError, match="every tweet needs at least one word"):
        program(**inputs)


def test_a_tweet_with_an_image_past_max_image_words_is_refused_by_the_exported_program():
    model = tiny_model(max_image_words=4)
    program = export(model)
    inputs = text_inputs([5, 2], 6)
    inputs.update(image_features=torch.rand(2, 49, 512), image_mask=torch.tensor([False, True]))
    assert_same_logits(program, model, inputs)  # the long tweet has no image
    inputs["image_mask"] = torch.tensor([True, True])
    with pytest.raises(RuntimeError, match="more than max_image_words=4 words"):
        program(**inputs)


def test_the_image_trunk_exports_with_the_model():
    model = tiny_model(vision_precision="fp32")  # the graph holds the float32 trunk
    inputs = text_inputs([3, 2], 6)
    generator = torch.Generator().manual_seed(0)
    inputs.update(pixel_values=torch.randn(2, 3, 224, 224, generator=generator), image_mask=torch.tensor([True, False]))
    program = torch.export.export(
        model,
        args=(),
        kwargs=inputs,
        dynamic_shapes={
            "input_ids": {0: (batch := torch.export.Dim("batch")), 1: (words := torch.export.Dim("words"))},
            "char_ids": {0: batch, 1: words, 2: torch.export.Dim("characters", min=5)},
            "attention_mask": {0: batch, 1: words},
            "pixel_values": {0: batch},
            "image_mask": {0: batch},
        },
    ).module()
    inputs = text_inputs([2, 5, 1], 7)
    inputs.update(
        pixel_values=torch.randn(3, 3, 224, 224, generator=generator), image_mask=torch.tensor([True, False, True])
    )
    assert_same_logits(program, model, inputs)
