"""Image backbones (VGG-16, ResNet-152, CLIP ViT-B/32) and vision precisions (auto, bf16, int8, fp32), with random
seeded weights: nothing here downloads."""

import argparse
import copy
import json
import logging
from unittest import mock

import datasets
import numpy as np
import pytest
import torch
import torchvision
from accelerate import PartialState
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModel

from acn_mner import demo_corpus
from acn_mner import train as train_acn
from acn_mner.corpus import load_twitter_mner
from acn_mner.dataset_command import main
from acn_mner.feature_cache import VISION_WEIGHTS_FILE, image_features_fingerprint, read_vision_settings
from acn_mner.parquet_export import export_parquet
from modeling_acn import AcnConfig, AcnForTokenClassification, AcnImageProcessor, AcnModel, quantization_acn
from modeling_acn.configuration_acn import INT8_CALIBRATION_FIELDS
from modeling_acn.image_processing_acn import BACKBONE_PREPROCESSING
from tests.corpus_fixtures import write_corpus, write_images

NO_BF16 = mock.patch("modeling_acn.vision_acn.supports_bf16", return_value=False)
HAS_BF16 = mock.patch("modeling_acn.vision_acn.supports_bf16", return_value=True)
X86_INT8 = "x86" in torch.backends.quantized.supported_engines
VGG16_INT8_POINTS = 1 + 13  # the input and each conv + ReLU; max pooling keeps its input's scale
SMALL = dict(vocab_size=5, char_vocab_size=5, word_embedding_dim=4, hidden_size=8, attention_size=4)


def backbone_model(backbone, seed=0, **settings):
    torch.manual_seed(seed)
    return AcnModel(AcnConfig(**SMALL, vision_backbone=backbone, **settings)).eval()


def demo_pixels(backbone, count, seed):
    """Demo-corpus pictures (a coloured figure among grey shapes), processed for the backbone."""
    rng = np.random.default_rng(seed)
    images = [demo_corpus.draw_image(rng, demo_corpus.ENTITY_TYPES[index % 4]) for index in range(count)]
    return AcnImageProcessor.for_backbone(backbone)(images=images, return_tensors="pt")["pixel_values"]


# --- configuration ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("backbone", "channels"), [("vgg16", 512), ("resnet152", 2048), ("clip-vit-b32", 768)])
def test_backbone_sets_the_region_size(backbone, channels):
    config = AcnConfig(vision_backbone=backbone)
    assert (config.num_image_regions, config.image_feature_dim) == (49, channels)


def test_bad_backbone_settings_are_refused():
    with pytest.raises(ValueError, match=r"vision_backbone must be one of vgg16, resnet152, clip-vit-b32, got 'vit'"):
        AcnConfig(vision_backbone="vit")
    with pytest.raises(ValueError, match=r"vision_backbone='resnet152' gives image_feature_dim=2048, got 512"):
        AcnConfig(vision_backbone="resnet152", image_feature_dim=512)
    with pytest.raises(ValueError, match=r"vision_precision must be one of auto, bf16, int8, fp32, got 'fp16'"):
        AcnConfig(vision_precision="fp16")
    with pytest.raises(ValueError, match=r"vision_int8_ranges must be finite \[min, max\] pairs"):
        AcnConfig(vision_int8_ranges=[[1.0, 0.0]])


def test_a_config_saved_before_backbones_loads_unchanged():
    saved = AcnConfig().to_dict()
    for key in ("vision_backbone", "vision_int8_points", "vision_int8_calibration_images"):
        saved.pop(key)
    saved["vision_precision"] = "bf16"  # the old default, written into every old config.json
    config = AcnConfig.from_dict(saved)
    assert (config.vision_backbone, config.vision_precision, config.image_feature_dim) == ("vgg16", "bf16", 512)


def test_image_processor_follows_the_backbone():
    clip = AcnImageProcessor.for_backbone("clip-vit-b32")
    assert clip.image_mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert clip.resample == BACKBONE_PREPROCESSING["clip-vit-b32"]["resample"]
    assert AcnImageProcessor.for_backbone("resnet152").to_dict() == AcnImageProcessor().to_dict()
    with pytest.raises(ValueError, match=r"vision_backbone must be one of .*, got 'vgg19'"):
        AcnImageProcessor.for_backbone("vgg19")


# --- the backbones against their own libraries ---------------------------------------------------------------------


def test_resnet152_regions_are_torchvision_layer4_and_its_weights_load(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet152(weights=None).eval()
    with torch.no_grad():  # batch norm away from the identity, so that a misplaced one shows
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
            if isinstance(module, torchvision.models.resnet.Bottleneck):
                module.bn3.weight.uniform_(
                    0.0, 0.2
                )  # small residual branches: activations stay in range over 50 blocks
    save_file(reference.state_dict(), tmp_path / "resnet152.safetensors")  # torchvision's keys, classifier included
    model = backbone_model("resnet152", vision_precision="fp32")
    model.load_vision_weights(tmp_path / "resnet152.safetensors")
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        grid = torch.nn.Sequential(*list(reference.children())[:-2])(pixels)  # (1, 2048, 7, 7)
        regions = model.get_image_features(pixels.clone())
    assert regions.shape == (1, 49, 2048)
    torch.testing.assert_close(regions, grid.flatten(2).transpose(1, 2), rtol=1e-4, atol=1e-4 * grid.abs().max().item())


def test_clip_regions_are_the_patch_tokens_without_cls():
    model = backbone_model("clip-vit-b32", vision_precision="fp32")
    tower = CLIPVisionModel(CLIPVisionConfig()).eval()
    tower.load_state_dict(model.vision.state_dict())
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        tokens = tower(pixel_values=pixels).last_hidden_state  # (2, 50, 768)
        regions = model.get_image_features(pixels)
    assert regions.shape == (2, 49, 768)
    torch.testing.assert_close(regions, tokens[:, 1:])


@pytest.mark.parametrize("backbone", ["resnet152", "clip-vit-b32"])
def test_random_backbones_are_seeded_and_give_finite_features(backbone):
    pixels = demo_pixels(backbone, 1, seed=0)
    with torch.no_grad():
        first = backbone_model(backbone, seed=3, vision_precision="fp32").get_image_features(pixels)
        again = backbone_model(backbone, seed=3, vision_precision="fp32").get_image_features(pixels)
    assert torch.equal(first, again)
    assert torch.isfinite(first).all() and first.abs().max() < torch.finfo(torch.float16).max  # cached as float16


def test_a_frozen_backbone_keeps_batch_norm_in_eval_mode_while_training():
    model = backbone_model("resnet152", vision_precision="fp32")
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        before = model.get_image_features(pixels)
        model.train()
        assert not model.vision.training and model.text_encoder.training
        during = model.get_image_features(pixels)
    torch.testing.assert_close(during, before)


# --- which precision runs ------------------------------------------------------------------------------------------


def test_auto_precision_on_a_gpu_is_bf16_where_it_has_bf16():
    model = backbone_model("vgg16")
    with HAS_BF16:
        assert model.effective_vision_precision("cuda") == "bf16"
        assert not model.needs_vision_calibration("cuda")
    with NO_BF16:
        assert model.effective_vision_precision("cuda") == "fp32"


@pytest.mark.skipif(not X86_INT8, reason="torch has no x86 quantised engine on this CPU")
def test_auto_precision_on_a_bf16_cpu_is_int8_once_calibrated_else_bf16():
    model = backbone_model("vgg16")
    with HAS_BF16:
        assert model.effective_vision_precision("cpu") == "bf16"
        assert model.needs_vision_calibration("cpu")
        model.set_vision_calibration({"vision_int8_ranges": [[0.0, 1.0]]})
        assert model.effective_vision_precision("cpu") == "int8"
        assert (
            backbone_model("vgg16", vision_precision="bf16", vision_int8_points=1).effective_vision_precision("cpu")
            == "bf16"
        )


@pytest.mark.skipif(not X86_INT8, reason="torch has no x86 quantised engine on this CPU")
def test_auto_precision_without_bf16_is_int8_once_calibrated_else_fp32():
    model = backbone_model("vgg16")
    with NO_BF16:
        assert model.effective_vision_precision("cpu") == "fp32"
        assert model.needs_vision_calibration("cpu")
        model.set_vision_calibration({"vision_int8_ranges": [[0.0, 1.0]]})
        assert model.effective_vision_precision("cpu") == "int8"
        assert not model.needs_vision_calibration("cpu")
        assert backbone_model("clip-vit-b32").effective_vision_precision("cpu") == "int8"  # dynamic: no calibration
        assert (
            backbone_model("vgg16", freeze_vision=False, vision_int8_points=1).effective_vision_precision("cpu")
            == "fp32"
        )


def test_forced_precisions_fall_back_where_the_device_cannot_run_them():
    with NO_BF16:
        assert backbone_model("vgg16", vision_precision="bf16").effective_vision_precision("cpu") == "fp32"
        assert (
            backbone_model("vgg16", vision_precision="int8", vision_int8_points=1).effective_vision_precision("cuda")
            == "fp32"
        )
        assert backbone_model("vgg16", vision_precision="fp32").effective_vision_precision("cpu") == "fp32"


@pytest.mark.skipif(not X86_INT8, reason="torch has no x86 quantised engine on this CPU")
def test_forced_int8_without_calibration_says_what_to_do():
    model = backbone_model("vgg16", vision_precision="int8")
    with pytest.raises(
        ValueError, match=r"vision_precision='int8' needs the backbone's activation ranges: call calibrate_vision"
    ):
        model.get_image_features(torch.zeros(1, 3, 224, 224))


@pytest.mark.skipif(not X86_INT8, reason="torch has no x86 quantised engine on this CPU")
@pytest.mark.parametrize(("backbone", "tolerance"), [("vgg16", 0.08), ("resnet152", 0.08), ("clip-vit-b32", 0.08)])
def test_int8_features_stay_close_to_fp32(backbone, tolerance):
    model = backbone_model(backbone, vision_precision="int8")
    model.calibrate_vision(demo_pixels(backbone, 4, seed=1))
    pixels = demo_pixels(backbone, 2, seed=2)  # pictures the calibration did not see
    with torch.no_grad():
        int8 = model.get_image_features(pixels)
        model.config.vision_precision = "fp32"
        exact = model.get_image_features(pixels)
    deviation = (int8 - exact).abs().max() / exact.abs().max()
    cosine = torch.nn.functional.cosine_similarity(int8.flatten(), exact.flatten(), dim=0)
    assert 0 < deviation < tolerance and cosine > 0.99


def vgg16_channel_statistics(trunk, pixels):
    """Brute force with the functional ops, on these pictures: each conv's mean input per channel and largest output
    per channel after ReLU."""
    means, maxima, hidden = [], [], pixels
    with torch.no_grad():
        for layer in trunk:
            if isinstance(layer, torch.nn.Conv2d):
                means.append(hidden.mean(dim=(0, 2, 3)))
                hidden = torch.relu(torch.nn.functional.conv2d(hidden, layer.weight, layer.bias, padding=1))
                maxima.append(hidden.amax(dim=(0, 2, 3)))
            elif isinstance(layer, torch.nn.MaxPool2d):
                hidden = torch.nn.functional.max_pool2d(hidden, 2)
    return means, maxima  # 13 tensors (channels,) each


def int8_weight_rounding(weight):
    """ΔW of per-output-channel symmetric int8 weights (torch's qint8: scale = largest |w| / 127.5, levels -128 to
    127)."""
    scale = weight.abs().amax(dim=(1, 2, 3), keepdim=True) / 127.5
    return (weight / scale).round().clamp(-128, 127) * scale - weight


@pytest.mark.skipif(not X86_INT8, reason="torch has no x86 quantised engine on this CPU")
def test_calibration_equalises_the_channels_puts_each_largest_value_on_its_level_and_corrects_the_biases():
    model = backbone_model("vgg16", vision_precision="int8")
    pixels = demo_pixels("vgg16", 3, seed=1)
    model.calibrate_vision(pixels, batch_size=2)
    _, maxima = vgg16_channel_statistics(model.vision, pixels)
    ratios = [
        (channel_max / channel_max.max()).clamp(min=quantization_acn.INT8_SMALLEST_RATIO) for channel_max in maxima[:-1]
    ]
    scales = [ratio**quantization_acn.INT8_EQUALISATION_EXPONENT for ratio in ratios]
    arrays = model.vision_int8.arrays()
    stored = arrays["vision_int8_channel_scales"]
    assert [len(layer) for layer in stored] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512]
    for layer, expected in zip(stored, scales, strict=True):
        torch.testing.assert_close(torch.tensor(layer), expected, rtol=1e-3, atol=1e-6)  # batches of two vs one
    # the equalised trunk computes the same function
    equalisation_alone = copy.deepcopy(model.vision_int8)
    equalisation_alone.bias_corrections.zero_()
    equalised = equalisation_alone.float_trunk(model.vision)
    with torch.no_grad():
        torch.testing.assert_close(equalised(pixels), model.vision(pixels), rtol=1e-4, atol=1e-5)
    # ranges: the input's observed [min, max]; each conv's largest equalised value (m_c / s_c) on level 224 of 255
    equalised_maxima = [
        channel_max / torch.tensor(scale) for channel_max, scale in zip(maxima[:-1], stored, strict=True)
    ]
    equalised_maxima += maxima[-1:]  # the last conv's output is not equalised
    expected = [[pixels.min().item(), pixels.max().item()]]
    expected += [
        [0.0, channel_max.max().item() * 127 / quantization_acn.INT8_LARGEST_LEVEL] for channel_max in equalised_maxima
    ]
    assert model.config.vision_int8_points == len(model.vision_int8.ranges) == VGG16_INT8_POINTS
    assert model.config.vision_int8_calibration_images == 3
    torch.testing.assert_close(model.vision_int8.ranges, torch.tensor(expected), rtol=1e-4, atol=1e-6)
    # bias corrections: sum(ΔW) · E[x] per output channel, on the equalised trunk
    means, _ = vgg16_channel_statistics(equalised, pixels)
    convs = [layer for layer in equalised if isinstance(layer, torch.nn.Conv2d)]
    corrections = arrays["vision_int8_bias_corrections"]
    assert [len(layer) for layer in corrections] == [conv.out_channels for conv in convs]
    for layer, conv, mean in zip(corrections, convs, means, strict=True):
        weight = conv.weight.detach()
        expected = int8_weight_rounding(weight).sum(dim=(2, 3)) @ mean
        one_step = weight.abs().max() / 127.5 * mean.max()  # a weight rounded the other way at a near tie
        torch.testing.assert_close(torch.tensor(layer), expected, rtol=2e-3, atol=2 * one_step.item())


@pytest.mark.skipif(not X86_INT8, reason="torch has no x86 quantised engine on this CPU")
def test_resnet152_calibration_stores_the_ranges_a_histogram_observer_chooses():
    from torch.ao.quantization.observer import HistogramObserver

    model = backbone_model("resnet152", vision_precision="int8")
    pixels = demo_pixels("resnet152", 2, seed=1)
    model.calibrate_vision(pixels, batch_size=1)
    assert model.vision_int8.arrays()["vision_int8_channel_scales"] is None  # equalisation is VGG-16's alone
    # brute force: one histogram observer per quantisation point, fed that point's float values batch by batch
    prepared = quantization_acn._prepare_int8(model.vision, pixels[:1], HistogramObserver)
    values = {}
    for name, module in prepared.named_modules():
        if isinstance(module, HistogramObserver):
            module.register_forward_hook(
                lambda module, inputs, output, name=name: values.setdefault(name, []).append(inputs[0])
            )
    with torch.no_grad():
        for chunk in pixels.split(1):
            prepared(chunk)
    assert len(values) == model.config.vision_int8_points == len(model.vision_int8.ranges) > 100
    for (low, high), batches in zip(model.vision_int8.ranges.tolist(), values.values(), strict=True):
        observer = HistogramObserver(dtype=torch.quint8, reduce_range=True)
        for batch in batches:
            observer(batch)
        scale, zero_point = observer.calculate_qparams()
        assert low == pytest.approx(-zero_point.item() * scale.item(), abs=1e-5)
        assert high == pytest.approx((127 - zero_point.item()) * scale.item(), rel=1e-5)  # summation order differs


@pytest.mark.skipif(not X86_INT8, reason="torch has no x86 quantised engine on this CPU")
def test_the_int8_vgg16_trunk_is_built_equalised_by_the_stored_scales():
    model = backbone_model("vgg16", vision_precision="int8")
    pixels = demo_pixels("vgg16", 2, seed=1)
    model.calibrate_vision(pixels)
    arrays = model.vision_int8.arrays()
    scales, corrections = arrays["vision_int8_channel_scales"], arrays["vision_int8_bias_corrections"]
    # the float trunk that int8 quantises: biases b / s - correction, brute force
    trunk = model.vision_int8.float_trunk(model.vision)
    original = [layer for layer in model.vision if isinstance(layer, torch.nn.Conv2d)]
    built = [layer for layer in trunk if isinstance(layer, torch.nn.Conv2d)]
    for index, (before, after) in enumerate(zip(original, built, strict=True)):
        scale = torch.tensor(scales[index]) if index < 12 else torch.ones(before.out_channels)
        expected = before.bias.detach() / scale - torch.tensor(corrections[index])
        torch.testing.assert_close(after.bias.detach(), expected)
    with torch.no_grad():
        calibrated = model.get_image_features(pixels)
        model.set_vision_calibration({**arrays, "vision_int8_channel_scales": None})  # ranges, corrections alone
        unequalised = model.get_image_features(pixels)
    assert not torch.equal(calibrated, unequalised)
    with pytest.raises(
        ValueError,
        match=r"vision_int8_channel_scales must give one value per output channel of each VGG-16 conv but the last, "
        r"got lengths \[1, 1,",
    ):
        model.set_vision_calibration({**arrays, "vision_int8_channel_scales": [[1.0]] * 12})


@pytest.mark.skipif(not X86_INT8, reason="torch has no x86 quantised engine on this CPU")
def test_the_bias_correction_brings_int8_features_closer_to_fp32():
    model = backbone_model("vgg16", vision_precision="int8")
    model.calibrate_vision(demo_pixels("vgg16", 8, seed=1))
    pixels = demo_pixels("vgg16", 4, seed=2)  # pictures the calibration did not see
    arrays = model.vision_int8.arrays()
    corrections = arrays["vision_int8_bias_corrections"]
    largest_error = {}
    with torch.no_grad():
        exact = model.vision(pixels).flatten(2).transpose(1, 2)  # (4, 49, 512)
        for name, applied in (
            ("as calibrated", corrections),
            ("sign flipped", [[-value for value in layer] for layer in corrections]),
        ):
            model.set_vision_calibration({**arrays, "vision_int8_bias_corrections": applied})
            largest_error[name] = ((model.get_image_features(pixels) - exact).abs().max() / exact.abs().max()).item()
    # measured 2.3% (VNNI kernels) and 2.7% (AVX2) against 4.3% on both
    assert largest_error["as calibrated"] < min(0.04, 0.75 * largest_error["sign flipped"])


def test_bad_equalisation_scales_are_refused():
    with pytest.raises(
        ValueError,
        match=r"vision_int8_channel_scales must be lists of finite positive numbers, one list per conv, "
        r"got \[\[1.0, 0.0\]\]",
    ):
        AcnConfig(vision_int8_channel_scales=[[1.0, 0.0]])
    with pytest.raises(
        ValueError,
        match=r"vision_int8_bias_corrections must be lists of finite numbers, one list per conv, got \[\[\]\]",
    ):
        AcnConfig(vision_int8_bias_corrections=[[]])
    with pytest.raises(ValueError, match=r"got \[\[1.0, 1.0, .*\.\.\. \(\d+ characters\)"):
        AcnConfig(vision_int8_channel_scales=[[1.0] * 300 + [float("nan")]])
    for flat_or_not_numbers in ([1.0, 2.0], [["1.5"]], [[True]]):
        with pytest.raises(ValueError, match=r"vision_int8_bias_corrections must be lists of finite numbers"):
            AcnConfig(vision_int8_bias_corrections=flat_or_not_numbers)
    with pytest.raises(
        ValueError,
        match=r"vision_int8_channel_scales belongs to the VGG-16 int8 calibration; "
        r"vision_backbone='resnet152' has none",
    ):
        AcnConfig(vision_backbone="resnet152", vision_int8_channel_scales=[[1.0]])


@pytest.mark.skipif(not X86_INT8, reason="torch has no x86 quantised engine on this CPU")
def test_a_reloaded_int8_model_rebuilds_the_same_backbone_from_the_calibration_in_its_weights(tmp_path):
    torch.manual_seed(0)
    model = AcnForTokenClassification(AcnConfig(**SMALL, vision_precision="int8")).eval()
    model.calibrate_vision(demo_pixels("vgg16", 4, seed=1))
    model.save_pretrained(tmp_path)
    # config.json holds the calibration's size and provenance; its arrays (125 KB of JSON) are in model.safetensors
    assert (tmp_path / "config.json").stat().st_size < 10_000
    saved = json.loads((tmp_path / "config.json").read_text())
    assert not set(saved) & set(INT8_CALIBRATION_FIELDS)
    assert (saved["vision_int8_points"], saved["vision_int8_calibration_images"]) == (VGG16_INT8_POINTS, 4)
    with safe_open(tmp_path / "model.safetensors", framework="pt") as weights:
        shapes = {key: weights.get_slice(key).get_shape() for key in weights.keys() if "vision_int8" in key}
    assert shapes == {
        "acn.vision_int8.ranges": [VGG16_INT8_POINTS, 2],
        "acn.vision_int8.channel_scales": [64 + 64 + 128 + 128 + 256 * 3 + 512 * 5],  # each conv but the last
        "acn.vision_int8.bias_corrections": [64 + 64 + 128 + 128 + 256 * 3 + 512 * 6],
    }
    reloaded = AcnForTokenClassification.from_pretrained(tmp_path).eval()
    pixels = demo_pixels("vgg16", 2, seed=2)
    inputs = {
        "input_ids": torch.tensor([[1, 2, 3], [4, 2, 0]]),
        "char_ids": torch.tensor([[[1, 2], [3, 0], [4, 4]], [[2, 0], [1, 3], [0, 0]]]),
        "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
        "pixel_values": pixels,
    }
    with torch.no_grad():
        assert torch.equal(reloaded.get_image_features(pixels), model.get_image_features(pixels))
        logits, reloaded_logits = model(**inputs).logits, reloaded(**inputs).logits
    assert torch.equal(reloaded_logits, logits)
    assert reloaded.decode(reloaded_logits, inputs["attention_mask"]) == model.decode(logits, inputs["attention_mask"])


def test_a_calibration_is_refused_naming_what_does_not_fit():
    model = backbone_model("vgg16")
    with pytest.raises(ValueError, match=r"vision_int8_ranges must be finite \[min, max\] pairs"):
        model.set_vision_calibration({"vision_int8_ranges": [[0.0, float("nan")]]})
    with pytest.raises(ValueError, match=r"an int8 calibration needs its vision_int8_ranges"):
        model.set_vision_calibration({"vision_int8_channel_scales": [[1.0] * 64]})
    with pytest.raises(ValueError, match=r"an int8 calibration has the arrays .*, got \['vision_int8_scales'\]"):
        model.set_vision_calibration({"vision_int8_ranges": [[0.0, 1.0]], "vision_int8_scales": [[1.0]]})
    with pytest.raises(ValueError, match=r"vision_backbone='clip-vit-b32' is quantised per batch: it has no"):
        AcnConfig(vision_backbone="clip-vit-b32", vision_int8_points=3)
    with pytest.raises(ValueError, match=r"vision_int8_points must be a positive integer, got 0"):
        AcnConfig(vision_int8_points=0)
    with pytest.raises(ValueError, match=r"vision_int8_points is 3, but vision_int8_ranges gives 1 ranges"):
        AcnConfig(vision_int8_points=3, vision_int8_ranges=[[0.0, 1.0]])
    assert model.vision_int8 is None and model.config.vision_int8_points is None  # nothing half set


# --- the feature cache ----------------------------------------------------------------------------------------------


def test_feature_cache_key_follows_the_effective_precision_not_the_configured_one(tmp_path):
    dataset = load_twitter_mner(write_corpus(tmp_path / "text"))["train"]
    processor = AcnImageProcessor()
    auto, fp32 = backbone_model("vgg16"), backbone_model("vgg16", vision_precision="fp32")
    with NO_BF16:  # auto without calibration runs in fp32: the same features, the same key
        assert image_features_fingerprint(dataset, auto, processor) == image_features_fingerprint(
            dataset, fp32, processor
        )
    with HAS_BF16:
        assert image_features_fingerprint(dataset, auto, processor) != image_features_fingerprint(
            dataset, fp32, processor
        )


def test_feature_cache_key_follows_the_backbone(tmp_path):
    dataset = load_twitter_mner(write_corpus(tmp_path / "text"))["train"]
    processor = AcnImageProcessor()
    vgg = image_features_fingerprint(dataset, backbone_model("vgg16"), processor)
    assert image_features_fingerprint(dataset, backbone_model("resnet152"), processor) != vgg


@pytest.mark.slow
@pytest.mark.skipif(not X86_INT8, reason="torch has no x86 quantised engine on this CPU")
def test_cache_features_calibrates_int8_on_training_images_and_records_it(tmp_path, caplog):
    export_parquet(
        load_twitter_mner(write_corpus(tmp_path / "text"), write_images(tmp_path / "images")),
        tmp_path / "export",
        source="fixture",
        corpus="twitter-2015",
    )
    argv = [
        "cache-features",
        "--dataset",
        str(tmp_path / "export"),
        "--vision_weights",
        "random",
        "--seed",
        "3",
        "--output_dir",
        str(tmp_path / "features"),
        "--cache_dir",
        str(tmp_path / "cache"),
        "--device",
        "cpu",
    ]
    with NO_BF16, caplog.at_level(logging.INFO):
        main(argv)
    assert "int8 backbone calibrated on" in caplog.text
    settings = read_vision_settings(tmp_path / "features" / VISION_WEIGHTS_FILE)
    assert (settings["vision_backbone"], settings["vision_precision"], len(settings["vision_int8_ranges"])) == (
        "vgg16",
        "int8",
        VGG16_INT8_POINTS,
    )
    assert len(settings["vision_int8_channel_scales"]) == 12 and len(settings["vision_int8_bias_corrections"]) == 13
    saved = datasets.load_from_disk(str(tmp_path / "features"))
    model = backbone_model("vgg16", vision_precision="int8")
    model.load_vision_weights(tmp_path / "features" / VISION_WEIGHTS_FILE)  # weights and calibration
    pixels = AcnImageProcessor()(images=[saved["train"][0]["image"]], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = model.get_image_features(pixels)[0]  # (49, 512)
    torch.testing.assert_close(saved.with_format("torch")["train"][0]["image_features"], expected.half().float())


@pytest.mark.slow
def test_cache_features_with_the_clip_backbone(tmp_path):
    export_parquet(
        load_twitter_mner(write_corpus(tmp_path / "text"), write_images(tmp_path / "images")),
        tmp_path / "export",
        source="fixture",
        corpus="twitter-2015",
    )
    main(
        [
            "cache-features",
            "--dataset",
            str(tmp_path / "export"),
            "--vision_weights",
            "random",
            "--vision_backbone",
            "clip-vit-b32",
            "--vision_precision",
            "fp32",
            "--output_dir",
            str(tmp_path / "features"),
            "--cache_dir",
            str(tmp_path / "cache"),
            "--device",
            "cpu",
        ]
    )
    saved = datasets.load_from_disk(str(tmp_path / "features"))
    assert saved["train"].features["image_features"].shape == (49, 768)
    assert read_vision_settings(tmp_path / "features" / VISION_WEIGHTS_FILE)["vision_backbone"] == "clip-vit-b32"
    with pytest.raises(ValueError, match=r"holds a 'clip-vit-b32' backbone, this model has vision_backbone='vgg16'"):
        backbone_model("vgg16").load_vision_weights(tmp_path / "features" / VISION_WEIGHTS_FILE)


# --- the training script ------------------------------------------------------------------------------------------


def test_training_takes_backbone_and_precision_from_the_cached_features(tmp_path):
    weights = {key: value.contiguous() for key, value in backbone_model("vgg16").vision.state_dict().items()}
    save_file(
        weights, tmp_path / VISION_WEIGHTS_FILE, metadata={"vision_backbone": "vgg16", "vision_precision": "bf16"}
    )
    args = train_acn.parse_args(["--dataset", str(tmp_path), "--output_dir", str(tmp_path / "out")])
    assert (args.vision_backbone, args.vision_precision) == ("vgg16", "bf16")
    with pytest.raises(
        ValueError, match=r"--vision_backbone resnet152 contradicts the cached features, computed with 'vgg16'"
    ):
        train_acn.parse_args(
            ["--dataset", str(tmp_path), "--output_dir", str(tmp_path / "out"), "--vision_backbone", "resnet152"]
        )
    (tmp_path / "raw").mkdir()  # a corpus folder without cached features (a missing folder is refused up front)
    defaults = train_acn.parse_args(["--dataset", str(tmp_path / "raw"), "--output_dir", str(tmp_path / "out")])
    assert (defaults.vision_backbone, defaults.vision_precision) == ("vgg16", "auto")


@pytest.mark.skipif(not X86_INT8, reason="torch has no x86 quantised engine on this CPU")
def test_training_from_pixels_calibrates_and_records_the_effective_precision():
    torch.manual_seed(0)
    model = AcnForTokenClassification(AcnConfig(**SMALL))  # vision_precision="auto"
    rng = np.random.default_rng(0)
    pictures = [demo_corpus.draw_image(rng, "PER"), None, demo_corpus.draw_image(rng, "LOC")]
    split = datasets.Dataset.from_dict({"image": pictures}, features=datasets.Features({"image": datasets.Image()}))
    processor = argparse.Namespace(image_processor=AcnImageProcessor())
    PartialState()  # the script logs through Accelerate
    with NO_BF16:
        train_acn.settle_vision_precision(
            model, processor, split, torch.device("cpu"), argparse.Namespace(calibration_images=2)
        )
    assert model.config.vision_precision == "int8" and model.config.vision_int8_points == VGG16_INT8_POINTS


def test_training_stops_at_a_perfect_dev_score_only_when_asked():
    state = train_acn.TrainingState(best_f1=train_acn.PERFECT_F1)
    assert train_acn.perfect_dev(state, argparse.Namespace(stop_at_perfect_dev=True))
    assert not train_acn.perfect_dev(state, argparse.Namespace(stop_at_perfect_dev=False))
    assert not train_acn.perfect_dev(
        train_acn.TrainingState(best_f1=0.99), argparse.Namespace(stop_at_perfect_dev=True)
    )
