"""Trunk provenance: cached image features record the trunk that computed them, and a model whose trunk differs
refuses them (in training, through the collator, and in evaluation), so that no model learns from, or is scored on,
features it cannot reproduce from pixels."""

import hashlib

import pytest
import torch

from acn_mner.corpus import load_twitter_mner
from acn_mner.feature_cache import (
    TRUNK_COLUMN,
    TRUNK_KEY,
    VISION_WEIGHTS_FILE,
    read_vision_settings,
    save_feature_cache,
)
from modeling_acn import (
    AcnConfig,
    AcnDataCollator,
    AcnForTokenClassification,
    AcnImageProcessor,
    AcnModel,
    AcnProcessor,
    AcnTokenizer,
)

from .conftest import BIO_LABELS, TINY_SIZES, make_batch
from .corpus_fixtures import write_corpus, write_images


def brute_force_digest(trunk: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in trunk.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(bytes(tensor.detach().contiguous().numpy().tobytes()))
    return digest.hexdigest()


@pytest.fixture
def model():
    torch.manual_seed(0)
    return AcnForTokenClassification(AcnConfig(**TINY_SIZES, id2label=dict(enumerate(BIO_LABELS)))).eval()


def test_trunk_id_is_the_backbone_and_the_digest_of_the_trunk_weights(model):
    assert model.vision_trunk_id() == f"vgg16:{brute_force_digest(model.acn.vision)}"


def test_trunk_id_follows_the_weights(model):
    before = model.vision_trunk_id()
    assert model.vision_trunk_id() == before  # unchanged weights: the same id (and no second hash)
    with torch.no_grad():
        model.acn.vision[0].weight[0, 0, 0, 0] += 1.0  # an in-place change, as an optimiser step makes
    assert model.vision_trunk_id() != before
    assert model.vision_trunk_id() == f"vgg16:{brute_force_digest(model.acn.vision)}"


def test_forward_takes_features_of_its_own_trunk_and_refuses_another_trunks(model):
    batch = make_batch([4, 2])
    batch.pop("labels")
    own = model(**batch, image_features_trunk=model.vision_trunk_id()).logits
    torch.testing.assert_close(own, model(**batch).logits)  # the id only checks, it changes nothing
    with pytest.raises(
        ValueError,
        match=r"computed by the vision trunk vgg16:0123456789ab, and this model's trunk is vgg16:\w{12}: load",
    ):
        model(**batch, image_features_trunk="vgg16:" + "0123456789ab" * 5 + "0123")


def test_the_collator_passes_the_trunk_id_and_refuses_a_batch_of_two_trunks():
    processor = AcnProcessor(AcnImageProcessor(), AcnTokenizer.from_corpus([["Obama", "visits", "Paris"]]))
    row = {
        "tokens": ["Obama", "visits"],
        "ner_tags": [1, 0],
        "image_features": torch.zeros(49, 512).numpy(),
        "image_mask": True,
    }
    collate = AcnDataCollator(processor, image_source="features")
    assert TRUNK_COLUMN not in collate([row])  # an old cache without the column: nothing to check
    assert collate([{**row, TRUNK_COLUMN: "vgg16:aa"}, {**row, TRUNK_COLUMN: "vgg16:aa"}])[TRUNK_COLUMN] == "vgg16:aa"
    with pytest.raises(ValueError, match=r"image features from 2 different trunks"):
        collate([{**row, TRUNK_COLUMN: "vgg16:aa"}, {**row, TRUNK_COLUMN: "vgg16:bb"}])


@pytest.mark.slow
def test_the_feature_cache_records_its_trunk_in_every_row_and_beside_the_features(tmp_path):
    dataset = load_twitter_mner(write_corpus(tmp_path / "text"), write_images(tmp_path / "images"))
    torch.manual_seed(0)
    extractor = AcnModel(AcnConfig(vision_precision="fp32"))
    save_feature_cache(dataset, extractor, AcnImageProcessor(), tmp_path / "features", cache_dir=tmp_path / "cache")
    cached = __import__("datasets").load_from_disk(str(tmp_path / "features"))
    expected = f"vgg16:{brute_force_digest(extractor.vision)}"
    assert {trunk for split in cached.values() for trunk in split[TRUNK_COLUMN]} == {expected}
    assert read_vision_settings(tmp_path / "features" / VISION_WEIGHTS_FILE)[TRUNK_KEY] == expected
    trained = AcnModel(AcnConfig(vision_precision="fp32"))  # another random trunk, until it loads the features'
    assert trained.vision_trunk_id() != expected
    trained.load_vision_weights(tmp_path / "features" / VISION_WEIGHTS_FILE)
    assert trained.vision_trunk_id() == expected
