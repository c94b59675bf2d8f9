"""acn_mner/demo_attention.py: the attention share on the figure's cells and the occlusion probe, on a tiny model."""

import numpy as np
import pytest
import torch

from acn_mner.demo_attention import (
    NUM_REGIONS,
    figure_share,
    mean_cell,
    occluded,
    other_cells,
    probe_image_decided,
    tag_entities,
)
from modeling_acn import AcnDataCollator
from tests.conftest import BIO_LABELS
from tests.pipeline_fixtures import tiny_pipeline

FIGURE = [8, 9, 15]


def test_figure_share_is_the_attention_on_the_cells():
    attention = np.zeros(NUM_REGIONS)
    attention[[8, 9, 40]] = [0.5, 0.25, 0.25]
    assert figure_share(attention, FIGURE) == pytest.approx(0.75)
    assert figure_share(attention * 4, FIGURE) == pytest.approx(0.75)  # a share, whatever the scale


def test_occluded_replaces_only_the_cells_and_keeps_the_input():
    features = np.arange(NUM_REGIONS * 3, dtype=np.float32).reshape(NUM_REGIONS, 3)
    fill = np.array([-1.0, -2.0, -3.0], dtype=np.float32)
    covered = occluded(features, FIGURE, fill)
    assert (covered[FIGURE] == fill).all()
    untouched = np.setdiff1d(np.arange(NUM_REGIONS), FIGURE)
    assert (covered[untouched] == features[untouched]).all()
    assert features[8, 0] == 24.0  # the input is not changed


def test_other_cells_are_as_many_outside_the_figure_and_seeded():
    draws = [other_cells(np.random.default_rng([0, index]), FIGURE) for index in range(50)]
    assert all(len(cells) == len(FIGURE) and not set(cells) & set(FIGURE) for cells in draws)
    assert draws[0] == other_cells(np.random.default_rng([0, 0]), FIGURE)
    assert len({tuple(cells) for cells in draws}) > 40  # random, not a fixed set


def test_mean_cell_averages_the_cells_of_images_only():
    features = np.stack([np.full((NUM_REGIONS, 2), 1.0), np.full((NUM_REGIONS, 2), 3.0), np.zeros((NUM_REGIONS, 2))])
    assert mean_cell(features, np.array([True, True, False])).tolist() == [2.0, 2.0]


def tiny_rows(model, count=3, seed=0):
    rng = np.random.default_rng(seed)
    size = model.config.image_feature_dim
    return [
        {
            "tokens": ["Obama", "visits", "Paris", "."],
            "ner_tags": [BIO_LABELS.index("B-PER"), 0, BIO_LABELS.index("B-LOC"), 0],
            "image_features": rng.normal(size=(NUM_REGIONS, size)).astype(np.float32),
            "image_mask": True,
        }
        for _ in range(count)
    ]


ENTRIES = [
    {"index": index, "start": 2, "end": 3, "type": "LOC", "figure_cells": cells}
    for index, cells in enumerate([FIGURE, [0], [47, 48]])
]


def test_tag_entities_reads_each_entity_word_against_a_direct_forward():
    pipe = tiny_pipeline()
    model, rows = pipe.model, tiny_rows(pipe.model)
    tagged = tag_entities(model, AcnDataCollator(pipe.processor, image_source="features"), rows, ENTRIES)
    with torch.no_grad():
        one = model(**AcnDataCollator(pipe.processor, image_source="features")([rows[1]]), output_attentions=True)
    np.testing.assert_allclose(tagged.attention[1], one.visual_attentions[0, 2].numpy(), atol=1e-6)
    assert tagged.attention.sum(-1) == pytest.approx(np.ones(3), abs=1e-5)
    assert ((tagged.gold_probability > 0) & (tagged.gold_probability < 1)).all()


def test_probe_share_matches_the_maps_and_occluding_with_what_is_there_changes_nothing():
    pipe = tiny_pipeline()
    model, rows = pipe.model, tiny_rows(pipe.model)
    fill = np.ones(model.config.image_feature_dim, dtype=np.float32)
    for row in rows:
        row["image_features"][:] = fill  # every cell is the fill: occluding any of them changes nothing
    probe = probe_image_decided(model, pipe.processor, rows, ENTRIES, fill, draws=2)
    tagged = tag_entities(model, AcnDataCollator(pipe.processor, image_source="features"), rows, ENTRIES)
    expected_share = np.mean(
        [tagged.attention[index][entry["figure_cells"]].sum() for index, entry in enumerate(ENTRIES)]
    )
    assert probe["attention_share"] == pytest.approx(expected_share)
    assert probe["chance_share"] == pytest.approx(np.mean([3 / 49, 1 / 49, 2 / 49]))
    occlusion = probe["occlusion"]
    assert occlusion["figure_cells"]["tag_change_rate"] == occlusion["other_cells"]["tag_change_rate"] == 0.0
    assert occlusion["figure_cells"]["gold_probability"] == pytest.approx(occlusion["none"]["gold_probability"])


def test_probe_occluding_every_figure_cell_differs_from_occluding_others():
    pipe = tiny_pipeline(seed=1)
    model, rows = pipe.model, tiny_rows(pipe.model, seed=1)
    fill = np.full(model.config.image_feature_dim, 5.0, dtype=np.float32)  # far from the features: it shows
    probe = probe_image_decided(model, pipe.processor, rows, ENTRIES, fill, draws=2)
    occlusion = probe["occlusion"]
    assert occlusion["figure_cells"]["gold_probability"] != pytest.approx(occlusion["none"]["gold_probability"])
    assert occlusion["other_cells"]["gold_probability"] != pytest.approx(occlusion["figure_cells"]["gold_probability"])


def test_probe_refuses_a_split_without_image_decided_entities():
    pipe = tiny_pipeline()
    with pytest.raises(ValueError, match="no image-decided entities to probe"):
        probe_image_decided(pipe.model, pipe.processor, [], [], np.zeros(4))
