"""ACN model: shapes, padding invariance, missing images, ablation switches, gradients and input checks."""

import itertools
import json
import logging

import pytest
import torch
from safetensors.torch import save_file

from modeling_acn import AcnConfig, AcnForTokenClassification, AcnModel
from modeling_acn.configuration_acn import PAPER_VARIANTS as VARIANTS
from modeling_acn.modeling_acn import additive_attention_scores
from modeling_acn.vision_acn import supports_bf16

from .conftest import TINY_SIZES, make_batch

BF16_CPU = supports_bf16(torch.device("cpu"))

CO_ATTENTION_LAYERS = {
    "image_projection",
    "visual_region_proj",
    "visual_word_proj",
    "visual_score",
    "textual_word_proj",
    "textual_image_proj",
    "textual_score",
    "visual_transform",
    "textual_transform",
    "fusion_gate",
    "filtration_gate",
    "multimodal_transform",
}


def build(config, **overrides):
    torch.manual_seed(0)
    return AcnForTokenClassification(AcnConfig(**{**config.to_dict(), **overrides}))


def model_inputs(batch):
    return {key: value for key, value in batch.items() if key != "labels"}


def module_names(model, prefix):
    return {name.split(".")[0] for name, _ in model.get_submodule(prefix).named_children()}


def test_forward_shapes_and_attention_outputs(tiny_config, text_batch):
    model = build(tiny_config).eval()
    outputs = model(**text_batch, output_attentions=True)
    batch, seq_len = text_batch["input_ids"].shape
    assert outputs.logits.shape == (batch, seq_len, 5)
    assert outputs.loss.shape == () and torch.isfinite(outputs.loss)
    assert outputs.visual_attentions.shape == (batch, seq_len, 49)
    assert outputs.textual_attentions.shape == (batch, seq_len, seq_len)
    assert outputs.fusion_gates.shape == (batch, seq_len, 16)
    assert outputs.filtration_gates.shape == (batch, seq_len)
    words = text_batch["attention_mask"].float()  # (batch, seq_len): padding rows attend to nothing
    torch.testing.assert_close(outputs.visual_attentions.sum(-1), words)
    torch.testing.assert_close(outputs.textual_attentions.sum(-1), words)
    padding = text_batch["attention_mask"] == 0  # (batch, seq_len)
    assert (outputs.textual_attentions.masked_select(padding[:, None, :].expand(-1, seq_len, -1)) == 0).all()
    assert ((outputs.filtration_gates > 0) & (outputs.filtration_gates < 1)).all()


def test_co_attention_equals_the_equations_word_by_word(tiny_config, text_batch):
    model = build(tiny_config).eval()
    attention, lengths = model.acn.co_attention, text_batch["attention_mask"].sum(-1)
    with torch.no_grad():
        outputs = model(**model_inputs(text_batch), output_attentions=True)
        hidden = model.acn.text_encoder(text_batch["input_ids"], text_batch["char_ids"], lengths)
        regions = torch.tanh(attention.image_projection(text_batch["image_features"]))  # v_I = tanh(W v + b)
        for example, length in enumerate(lengths.tolist()):
            for word in range(length):
                h_t, v_I = hidden[example, word], regions[example]
                z = torch.tanh(attention.visual_region_proj(v_I) + attention.visual_word_proj(h_t))  # (regions, k)
                alpha = attention.visual_score(z).squeeze(-1).softmax(0)  # (regions,)
                torch.testing.assert_close(outputs.visual_attentions[example, word], alpha)
                v_hat = alpha @ v_I
                x = hidden[example, :length]  # the tweet's words
                z = torch.tanh(attention.textual_word_proj(x) + attention.textual_image_proj(v_hat))  # (words, k)
                beta = attention.textual_score(z).squeeze(-1).softmax(0)  # (words,)
                torch.testing.assert_close(outputs.textual_attentions[example, word, :length], beta)


def test_fused_attention_scores_match_autograd_of_the_plain_formula():
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(7, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    keys = torch.randn(3, 4, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(5, dtype=torch.float64, generator=generator, requires_grad=True)
    example_of_query = torch.tensor([0, 0, 1, 2, 2, 2, 1])
    upstream = torch.randn(7, 4, dtype=torch.float64, generator=generator)
    plain = torch.tanh(keys[example_of_query] + queries[:, None, :]) @ weight  # (queries, keys)
    fused = additive_attention_scores(queries, keys, example_of_query, weight)
    torch.testing.assert_close(fused, plain)
    for ours, reference in zip(
        torch.autograd.grad(fused, (queries, keys, weight), upstream),
        torch.autograd.grad(plain, (queries, keys, weight), upstream),
        strict=True,
    ):
        torch.testing.assert_close(ours, reference)


def test_fused_attention_scores_keep_bf16_error_at_the_plain_formulas_level():
    # w with a large sum: a formula that subtracts sum(w) at the end would lose the score to bf16 rounding
    generator = torch.Generator().manual_seed(0)
    queries, keys = torch.randn(40, 64, generator=generator), torch.randn(4, 49, 64, generator=generator)
    weight = torch.randn(64, generator=generator) + 3
    example_of_query = torch.arange(40) % 4
    exact = torch.tanh(keys.double()[example_of_query] + queries.double()[:, None, :]) @ weight.double()
    low = (queries.bfloat16(), keys.bfloat16(), example_of_query, weight.bfloat16())
    plain_error = (torch.tanh(low[1][example_of_query] + low[0][:, None, :]) @ low[3] - exact).abs().max()
    fused_error = (additive_attention_scores(*low) - exact).abs().max()
    assert fused_error <= 2 * plain_error


def test_fused_attention_scores_refuse_a_second_backward():
    queries, keys = torch.randn(2, 3, requires_grad=True), torch.randn(1, 4, 3)
    scores = additive_attention_scores(queries, keys, torch.tensor([0, 0]), torch.randn(3))
    scores.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass"):
        scores.sum().backward()


def test_padding_never_changes_a_real_word(tiny_config):
    model = build(tiny_config).eval()
    alone = make_batch([3], seed=4)
    padded = make_batch([7, 3, 5], seq_len=9, word_len=11, seed=5)
    for key in ("input_ids", "image_features"):
        padded[key][1] = torch.zeros_like(padded[key][1])
        padded[key][1, : alone[key].shape[1]] = alone[key][0]
    padded["char_ids"][1] = 0
    padded["char_ids"][1, :3, :5] = alone["char_ids"][0]
    with torch.no_grad():
        logits_alone = model(**model_inputs(alone)).logits[0]  # (3, tags)
        logits_padded = model(**model_inputs(padded)).logits[1, :3]  # (3, tags)
    torch.testing.assert_close(logits_padded, logits_alone, atol=1e-5, rtol=1e-5)


def test_any_tweet_length_works(tiny_config):
    model = build(tiny_config).eval()
    batch = make_batch([80, 1], seed=2)
    with torch.no_grad():
        logits = model(**model_inputs(batch)).logits
    assert logits.shape == (2, 80, 5)
    assert [len(tags) for tags in model.decode(logits, batch["attention_mask"])] == [80, 1]


def test_missing_image_gives_the_text_path_and_ignores_its_features(tiny_config, text_batch):
    model = build(tiny_config).eval()
    text_batch["image_mask"] = torch.tensor([True, False, True, False])
    with torch.no_grad():
        reference = model(**model_inputs(text_batch), output_attentions=True)
        text_batch["image_features"][[1, 3]] = float("nan")
        changed = model(**model_inputs(text_batch))
        hidden = model.acn.text_encoder(
            text_batch["input_ids"], text_batch["char_ids"], text_batch["attention_mask"].sum(-1)
        )
        text_path = hidden @ model.classifier.weight[:, :16].T + model.classifier.bias  # W_m̂ [h ; 0]
    torch.testing.assert_close(changed.logits, reference.logits)
    torch.testing.assert_close(changed.logits[[1, 3]], text_path[[1, 3]])
    assert (reference.filtration_gates[[1, 3]] == 0).all()


def test_no_image_inputs_means_every_tweet_takes_the_text_path(tiny_config, text_batch):
    model = build(tiny_config).eval()
    with torch.no_grad():
        without = model(**{key: value for key, value in model_inputs(text_batch).items() if "image" not in key})
        masked = model(**{**model_inputs(text_batch), "image_mask": torch.zeros(4, dtype=torch.bool)})
    torch.testing.assert_close(without.logits, masked.logits)


def test_vgg_runs_only_on_present_images(tiny_config):
    model = build(tiny_config).eval()
    batch = model_inputs(make_batch([3, 2]))
    del batch["image_features"], batch["image_mask"]
    pixels = torch.randn(2, 3, 224, 224)
    seen = []
    model.acn.vision.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[0]))
    with torch.no_grad():
        mixed = model(**batch, pixel_values=pixels, image_mask=torch.tensor([True, False])).logits
        alone = model(**{k: v[:1] for k, v in batch.items()}, pixel_values=pixels[:1]).logits
    assert seen == [1, 1]
    torch.testing.assert_close(mixed[0, :3], alone[0])


def test_a_batch_without_any_image_trains_without_nan(tiny_config, text_batch):
    model = build(tiny_config)
    text_batch["image_mask"] = torch.zeros(4, dtype=torch.bool)
    text_batch["image_features"] = torch.full_like(text_batch["image_features"], float("nan"))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        loss = model(**text_batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(parameter).all() for parameter in model.parameters())


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_trains_a_step(variant, tiny_config, text_batch):
    model = build(tiny_config, **VARIANTS[variant])
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    inputs = text_batch if model.config.use_image else {k: v for k, v in text_batch.items() if "image" not in k}
    loss = model(**inputs).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    changed = {name for name, parameter in model.named_parameters() if not torch.equal(before[name], parameter)}
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert changed == trainable


@pytest.mark.parametrize(
    "variant, co_attention, has_char_cnn, has_crf, decoder_input",
    [
        ("full", CO_ATTENTION_LAYERS, True, True, 32),
        ("text-only", None, True, True, 16),
        ("bilstm-crf", None, False, True, 16),
        ("no-crf", CO_ATTENTION_LAYERS, True, False, 32),
        (
            "no-fusion-gate",
            CO_ATTENTION_LAYERS - {"fusion_gate", "visual_transform", "textual_transform"},
            True,
            True,
            32,
        ),
        ("no-filtration-gate", CO_ATTENTION_LAYERS - {"filtration_gate", "multimodal_transform"}, True, True, 32),
    ],
)
def test_every_variant_has_exactly_its_parameters(
    variant, co_attention, has_char_cnn, has_crf, decoder_input, tiny_config
):
    model = build(tiny_config, **VARIANTS[variant])
    if co_attention is None:
        assert model.acn.co_attention is None and model.acn.vision is None
    else:
        assert module_names(model, "acn.co_attention") == co_attention
        assert sum(p.numel() for p in model.acn.vision.parameters()) == 14_714_688  # VGG-16 conv trunk
    assert (model.acn.text_encoder.char_cnn is not None) == has_char_cnn
    assert (model.crf is not None) == has_crf
    assert model.classifier.in_features == decoder_input
    if variant == "no-fusion-gate":
        assert model.acn.co_attention.multimodal_transform.in_features == 32  # [v̂_t ; ĥ_t]


def test_without_both_gates_the_decoder_reads_the_concatenated_attended_features(tiny_config, text_batch):
    model = build(tiny_config, fusion="concat", use_filtration_gate=False)
    assert model.classifier.in_features == 16 + 32  # [h_t ; v̂_t ; ĥ_t]
    assert torch.isfinite(model(**text_batch).loss)


def test_gradients_reach_every_trainable_parameter(tiny_config, text_batch):
    model = build(tiny_config)
    model(**text_batch).loss.backward()
    trainable = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    assert trainable and not any(name.startswith("acn.vision") for name in trainable)  # frozen by default
    missing = [name for name in trainable if model.get_parameter(name).grad is None]
    assert missing == []
    assert all(model.get_parameter(name).grad.abs().sum() > 0 for name in trainable)


def test_unfrozen_vision_trunk_trains_from_pixels(tiny_config):
    model = build(tiny_config, freeze_vision=False)
    batch = make_batch([2])
    del batch["image_features"]
    batch["pixel_values"] = torch.randn(1, 3, 224, 224)
    model(**batch).loss.backward()
    assert model.acn.vision[0].weight.grad.abs().sum() > 0


def test_pixel_values_give_the_same_logits_as_their_features(tiny_config):
    model = build(tiny_config).eval()
    batch = model_inputs(make_batch([4, 2]))
    del batch["image_features"]
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        from_pixels = model(**batch, pixel_values=pixels).logits
        features = model.get_image_features(pixels)
        from_features = model(**batch, image_features=features).logits
    assert features.shape == (2, 49, 512) and (features >= 0).all()  # pool5 follows a ReLU
    torch.testing.assert_close(from_pixels, from_features)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_vision_weights_load_from_a_local_file(suffix, tiny_config, tmp_path):
    source = AcnModel(AcnConfig(**tiny_config.to_dict()))
    state = {f"features.{key}": value.clone() for key, value in source.vision.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # a full VGG-16 file also holds the classifier
    path = tmp_path / f"vgg16{suffix}"
    torch.save(state, path) if suffix == ".pth" else save_file(state, str(path))
    target = AcnModel(AcnConfig(**tiny_config.to_dict()))
    target.load_vision_weights(path)
    for key, value in source.vision.state_dict().items():
        torch.testing.assert_close(target.vision.state_dict()[key], value)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"image_features": torch.zeros(4, 36, 512)},
            r"image_features must have shape \(4, 49, 512\), got shape \(4, 36, 512\)",
        ),
        (
            {"image_features": None, "pixel_values": torch.zeros(4, 3, 64, 64)},
            r"pixel_values must have shape \(4, 3, 224, 224\), got shape \(4, 3, 64, 64\)",
        ),
        (
            {"image_features": None, "pixel_values": torch.zeros(3, 3, 224, 224)},
            r"pixel_values must have shape \(4, 3, 224, 224\), got shape \(3, 3, 224, 224\)",
        ),
        ({"image_features": None}, "image_mask marks images present, but neither pixel_values nor image_features"),
        ({"pixel_values": torch.zeros(4, 3, 224, 224)}, "pass pixel_values or image_features, not both"),
        ({"char_ids": torch.zeros(4, 2, 3, dtype=torch.long)}, r"char_ids must be .* got shape \(4, 2, 3\)"),
        ({"attention_mask": torch.ones(4, 2)}, r"attention_mask must have the shape of input_ids \(4, 5\)"),
        ({"image_mask": torch.ones(3, dtype=torch.bool)}, r"image_mask must have shape \(4,\), got shape \(3,\)"),
        ({"labels": torch.full((4, 5), 7)}, r"labels of real words must be in \[0, 5\) or -100 .*, got \[7\]"),
        ({"labels": torch.full((4, 5), -1)}, r"labels of real words must be in \[0, 5\) or -100 .*, got \[-1\]"),
    ],
)
def test_wrong_inputs_raise_errors_naming_the_value(change, message, tiny_config, text_batch):
    model = build(tiny_config)
    with pytest.raises(ValueError, match=message):
        model(**{**text_batch, **change})


def ignored_labels(labels):
    """The batch's labels (tweets of 5, 3, 1 and 4 words) with -100 on real words: the first and last of a tweet, a
    run up to the last word, every word of a tweet; the last tweet keeps all its tags."""
    ignored = labels.clone()
    ignored[0, 0] = ignored[0, 4] = -100
    ignored[1, 1:3] = -100
    ignored[2, 0] = -100
    return ignored


def test_words_labelled_minus_100_are_summed_over_by_the_crf_loss(tiny_config, text_batch):
    """transformers' -100 marks a position the loss ignores, wherever it is: the CRF's likelihood of a tweet is then
    that of its known tags, the sum over every tag of the ignored words (here enumerated)."""
    model = build(tiny_config).eval()
    labels = ignored_labels(text_batch["labels"])
    with torch.no_grad():
        output = model(**{**text_batch, "labels": labels})
        word_mask = text_batch["attention_mask"].bool()
        expected = []
        for row in range(labels.shape[0]):
            unknown = ((labels[row] == -100) & word_mask[row]).nonzero().flatten().tolist()
            likelihoods = []
            for filling in itertools.product(range(model.config.num_labels), repeat=len(unknown)):
                tags = labels[row].clone()
                tags[unknown] = torch.tensor(filling, dtype=tags.dtype)
                likelihoods.append(
                    model.crf.log_likelihood(output.logits[row : row + 1], tags[None], word_mask[row : row + 1])
                )
            expected.append(torch.cat(likelihoods).logsumexp(0))
    torch.testing.assert_close(output.loss, -torch.stack(expected).mean())
    assert expected[2].abs() < 1e-5  # no known tag: nothing to learn from that tweet


def test_words_labelled_minus_100_are_left_out_of_the_softmax_loss(tiny_config, text_batch):
    model = build(tiny_config, decoder="softmax").eval()
    labels = ignored_labels(text_batch["labels"])
    output = model(**{**text_batch, "labels": labels})
    known = labels != -100
    torch.testing.assert_close(output.loss, torch.nn.functional.cross_entropy(output.logits[known], labels[known]))
    nothing_known = model(**{**text_batch, "labels": torch.full_like(labels, -100)}).loss
    assert nothing_known == 0 and nothing_known.requires_grad


def test_a_batch_without_known_tags_gives_zero_loss_and_zero_gradients(tiny_config, text_batch):
    model = build(tiny_config)
    loss = model(**{**text_batch, "labels": torch.full_like(text_batch["labels"], -100)}).loss
    loss.backward()
    assert loss.abs() < 1e-5
    assert all(torch.isfinite(parameter.grad).all() for parameter in model.parameters() if parameter.grad is not None)
    assert model.crf.transitions.grad.abs().max() < 1e-5


def test_right_aligned_padding_is_refused(tiny_config, text_batch):
    text_batch["attention_mask"] = text_batch["attention_mask"].flip(-1)
    with pytest.raises(ValueError, match="attention_mask must be left-aligned"):
        build(tiny_config)(**text_batch)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"fusion": "sum"}, "fusion must be 'gate' or 'concat', got 'sum'"),
        ({"decoder": "mlp"}, "decoder must be 'crf' or 'softmax', got 'mlp'"),
        ({"hidden_size": 15}, "hidden_size must be a positive even number .* got 15"),
        ({"dropout": 1.5}, r"dropout must be in \[0, 1\), got 1.5"),
        ({"char_kernel_sizes": (2, 0)}, r"char_kernel_sizes must be positive widths, got \(2, 0\)"),
        ({"vocab_size": 0}, "vocab_size must be a positive integer, got 0"),
    ],
)
def test_config_rejects_bad_values(change, message):
    with pytest.raises(ValueError, match=message):
        AcnConfig(**{**TINY_SIZES, **change})


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="variant must be one of .* got 'acn-2'"):
        AcnConfig.from_variant("acn-2")


def test_defaults_are_the_papers():
    config = AcnConfig()
    assert (config.word_embedding_dim, config.char_embedding_dim, config.hidden_size) == (200, 30, 200)
    assert (config.char_num_filters, config.char_kernel_sizes, config.char_activation) == (32, (2, 3, 4), "tanh")
    assert config.attention_size == config.hidden_size  # the paper sets every dimension to the hidden size
    assert AcnConfig(hidden_size=100).attention_size == 100 and AcnConfig(attention_size=50).attention_size == 50
    assert (config.num_image_regions, config.image_feature_dim) == (49, 512)
    assert config.id2label[5] == "B-OTHER" and config.num_labels == 9


@pytest.mark.skipif(not BF16_CPU, reason="this CPU has no bf16 kernels, so vision_precision='bf16' runs in fp32")
def test_bf16_vision_stays_within_two_percent_of_fp32(tiny_config):
    tiny_config.vision_precision = "bf16"
    model = build(tiny_config).eval()
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        exact = model.acn.vision(pixels).flatten(2).transpose(1, 2)  # (1, 49, 512)
        fast = model.get_image_features(pixels)
        model.config.vision_precision = "fp32"
        plain = model.get_image_features(pixels)
    torch.testing.assert_close(plain, exact, rtol=1e-4, atol=1e-5)
    assert not torch.equal(fast, plain)  # the bf16 path ran
    assert (fast - exact).abs().max() <= 0.02 * exact.abs().max()


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here)")
        ),
    ],
)
def test_bf16_autocast_trains_and_decodes(device, tiny_config, text_batch):
    """Tweets with and without an image in one batch: on CUDA, autocast's promotion of index_put once crashed here."""
    model = build(tiny_config).to(device)
    text_batch = {name: value.to(device) for name, value in text_batch.items()}
    text_batch["image_mask"] = torch.tensor([True, False, True, True], device=device)
    with torch.autocast(device, dtype=torch.bfloat16):
        outputs = model(**text_batch)
    outputs.loss.backward()
    assert outputs.loss.dtype == torch.float32 and torch.isfinite(outputs.loss)
    tags = model.decode(outputs.logits.to(torch.bfloat16), text_batch["attention_mask"])
    assert [len(tweet) for tweet in tags] == [5, 3, 1, 4]


def test_co_attention_rows_are_placed_back_on_devices_without_autocast(tiny_config, text_batch, monkeypatch):
    model = build(tiny_config).eval()
    inputs = {name: value for name, value in text_batch.items() if name != "labels"}
    inputs["image_mask"] = torch.tensor([True, False, True, False])  # co-attention runs on some tweets only
    with torch.no_grad():
        expected = model(**inputs).logits

    def no_autocast(device_type, *args, **kwargs):
        raise RuntimeError(f"{device_type} has no autocast")

    # a device without autocast (meta, for one): asking it to turn autocast off would raise
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda device_type: False)
    monkeypatch.setattr(torch, "autocast", no_autocast)
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, expected)


@pytest.mark.parametrize("activation", ["tanh", "none"])
def test_char_cnn_is_the_papers_max_over_tanh_windows_word_by_word(activation, tiny_config, text_batch):
    model = build(tiny_config, char_activation=activation)
    cnn = model.acn.text_encoder.char_cnn
    squash = torch.tanh if activation == "tanh" else (lambda x: x)
    with torch.no_grad():
        features = cnn(text_batch["char_ids"])  # (batch, seq_len, 3 * filters)
        for example, word in text_batch["attention_mask"].nonzero().tolist():
            chars = text_batch["char_ids"][example, word]
            chars = chars[chars != tiny_config.char_pad_id]  # the word's own characters
            embedded = cnn.embedding(chars)  # (length, char_dim)
            expected = []
            for conv, width in zip(cnn.convs, tiny_config.char_kernel_sizes, strict=True):
                starts = range(max(len(chars) - width, 0) + 1)  # a short word keeps its first, padded window
                windows = [nn_window(embedded, start, width) for start in starts]
                responses = [squash((conv.weight * window.T).sum((1, 2)) + conv.bias) for window in windows]
                expected.append(torch.stack(responses).max(0).values)  # (filters,)
            torch.testing.assert_close(features[example, word], torch.cat(expected), rtol=1e-5, atol=1e-6)


def nn_window(embedded, start, width):
    """Characters start..start+width-1, zero-padded past the word (the padding character's embedding is zero)."""
    window = embedded[start : start + width]
    return torch.cat([window, window.new_zeros(width - len(window), window.shape[1])])  # (width, char_dim)


@pytest.mark.parametrize("variant", ["full", "no-fusion-gate", "no-filtration-gate"])
def test_fusion_filtration_and_logits_equal_the_equations_word_by_word(variant, tiny_config, text_batch):
    model = build(tiny_config, **VARIANTS[variant]).eval()
    attention, lengths = model.acn.co_attention, text_batch["attention_mask"].sum(-1)
    with torch.no_grad():
        outputs = model(**model_inputs(text_batch), output_attentions=True)
        hidden = model.acn.text_encoder(text_batch["input_ids"], text_batch["char_ids"], lengths)
        regions = torch.tanh(attention.image_projection(text_batch["image_features"]))  # v_I
        for example, length in enumerate(lengths.tolist()):
            for word in range(length):
                h_t = hidden[example, word]
                v_hat = outputs.visual_attentions[example, word] @ regions[example]  # Σ_i α_t,i v_i
                h_hat = outputs.textual_attentions[example, word, :length] @ hidden[example, :length]  # Σ_j β_t,j h_j
                if variant == "no-fusion-gate":  # CBCFiC: the attended features, concatenated as they are
                    m_t = torch.cat([v_hat, h_hat])
                else:
                    h_v = torch.tanh(attention.visual_transform.weight @ v_hat + attention.visual_transform.bias)
                    h_h = torch.tanh(attention.textual_transform.weight @ h_hat + attention.textual_transform.bias)
                    g_t = torch.sigmoid(attention.fusion_gate.weight @ torch.cat([h_v, h_h]))
                    torch.testing.assert_close(outputs.fusion_gates[example, word], g_t)
                    m_t = g_t * h_v + (1 - g_t) * h_h
                if variant == "no-filtration-gate":  # CBCFuC: the fused feature itself
                    s_t, u_t = torch.tensor(1.0), m_t
                else:
                    gate = attention.filtration_gate
                    s_t = torch.sigmoid(gate.weight[0] @ torch.cat([h_t, m_t]) + gate.bias[0])
                    u_t = s_t * torch.tanh(
                        attention.multimodal_transform.weight @ m_t + attention.multimodal_transform.bias
                    )
                torch.testing.assert_close(outputs.filtration_gates[example, word], s_t)
                logits = model.classifier.weight @ torch.cat([h_t, u_t]) + model.classifier.bias  # W_m̂ [h_t ; u_t]
                torch.testing.assert_close(outputs.logits[example, word], logits)


def test_text_only_config_warns_that_fusion_settings_are_ignored(caplog):
    with caplog.at_level(logging.WARNING):
        AcnConfig(**TINY_SIZES, use_image=False, fusion="concat")
    assert (
        "use_image=False has no co-attention, so fusion='concat' and use_filtration_gate=True are ignored"
        in caplog.text
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        AcnConfig.from_variant("text-only", **TINY_SIZES)
    assert "ignored" not in caplog.text


def test_misspelt_keyword_arguments_are_refused(tiny_config, text_batch):
    model = build(tiny_config)
    inputs = model_inputs(text_batch)
    features = inputs.pop("image_features")
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['image_feature'\]"):
        model(**inputs, image_feature=features)
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['pixel_value'\]"):
        model.acn(**inputs, pixel_value=features)
    loss = model(**text_batch, num_items_in_batch=12).loss  # what Trainer passes
    assert torch.isfinite(loss)


def test_return_dict_false_gives_the_fields_as_a_tuple(tiny_config, text_batch):
    model = build(tiny_config).eval()
    with torch.no_grad():
        as_dict = model(**text_batch)
        as_tuple = model(**text_batch, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(as_dict.to_tuple())
    for ours, reference in zip(as_tuple, as_dict.to_tuple(), strict=True):
        torch.testing.assert_close(ours, reference)


def test_a_folder_saved_before_the_char_tanh_loads_with_its_old_behaviour(tiny_config, tmp_path):
    model = build(tiny_config, char_activation="none")
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["char_activation"]
    saved["max_word_length"] = 30  # written by earlier versions, never read by the model
    (tmp_path / "config.json").write_text(json.dumps(saved))
    loaded = AcnForTokenClassification.from_pretrained(tmp_path)
    assert loaded.config.char_activation == "none"
    assert not hasattr(loaded.config, "max_word_length")
    assert isinstance(loaded.acn.text_encoder.char_cnn.activation, torch.nn.Identity)
    assert AcnConfig(**TINY_SIZES).char_activation == "tanh"  # a new configuration follows the paper
