"""Where the demo's ACN looks, and whether what it looks at decides the tag.

For each image-decided entity of a demo split (``image_decided.json`` names its tweet, span, type and the 7 x 7 cells
its image's figure covers), on the cached image features:

- **attention share**: the share of the entity's visual attention (word-guided, over the 49 regions; the mean over
  the entity's words) that lies on the figure's cells. Chance is the share of the image those cells are.
- **occlusion**: the figure's cells' features are replaced by the *mean cell* (the mean region feature over every
  cell of every training image, a fixed feature that shows no figure), and so, in another pass, are as many other
  cells, drawn at random among the cells the figure does not cover (seeded, ``draws`` draws per entity). Occluding
  features rather than pixels asks what the attention path reads from those regions: a random trunk's deep
  features see far beyond their cell, so occluded pixels would change every region. The report gives the mean
  probability of the gold tag on the entity's first word (the CRF's marginal) and the share of entities whose
  decoded tags change, unoccluded, with the figure occluded, and with other cells occluded.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch

from modeling_acn import AcnDataCollator, AcnForTokenClassification, AcnProcessor
from modeling_acn.pipeline_acn import tag_marginals

from .demo_corpus import GRID_SIDE

NUM_REGIONS = GRID_SIDE * GRID_SIDE
CONTROL_DRAWS = 5  # random sets of other cells occluded per entity


def figure_share(attention: np.ndarray, cells: Sequence[int]) -> float:
    """The share of one attention map over the 49 regions, `(49,)`, that lies on `cells`."""
    return float(attention[list(cells)].sum() / attention.sum())


def mean_cell(features: np.ndarray, image_mask: np.ndarray) -> np.ndarray:
    """The mean region feature `(channels,)` over every cell of the images of `features` `(images, 49, channels)`
    that have one (`image_mask`)."""
    return features[image_mask.astype(bool)].astype(np.float64).mean(axis=(0, 1)).astype(np.float32)


def occluded(features: np.ndarray, cells: Sequence[int], fill: np.ndarray) -> np.ndarray:
    """A copy of one image's region features `(49, channels)` with the rows of `cells` replaced by `fill`."""
    copy = np.array(features, dtype=np.float32)  # (49, channels)
    copy[list(cells)] = fill
    return copy


def other_cells(rng: np.random.Generator, cells: Sequence[int]) -> list[int]:
    """As many cells as `cells`, drawn without replacement among the others."""
    others = np.setdiff1d(np.arange(NUM_REGIONS), cells)
    return sorted(int(cell) for cell in rng.choice(others, size=len(cells), replace=False))


@dataclass(frozen=True)
class TaggedEntities:
    """Per entity: the tags decoded on its words, the gold tag's probability on its first word, its attention map."""

    tags: list[tuple[int, ...]]
    gold_probability: np.ndarray  # (entities,)
    attention: np.ndarray  # (entities, 49)


def tag_entities(
    model: AcnForTokenClassification,
    collator: AcnDataCollator,
    rows: list[Mapping[str, Any]],
    entries: Sequence[Mapping[str, Any]],
) -> TaggedEntities:
    """Run the model on the tweets of `entries` (`rows[i]` is the tweet of `entries[i]`) and read each entity."""
    batch = collator(rows)
    with torch.no_grad():
        output = model(**batch, output_attentions=True)
    word_mask = batch["attention_mask"].bool()  # (entities, seq_len)
    # the model is the pipeline's _Tagger; mypy reads its read-only `dtype` property as unlike the protocol's attribute
    marginals = tag_marginals(cast(Any, model), output.logits, word_mask)  # (entities, seq_len, num_labels)
    paths = model.decode(output.logits, batch["attention_mask"])
    label2id = model.config.label2id
    tags, gold, attention = [], [], []
    for row, (entry, path) in enumerate(zip(entries, paths, strict=True)):
        start, end = entry["start"], entry["end"]
        tags.append(tuple(path[start:end]))
        gold.append(float(marginals[row, start, label2id[f"B-{entry['type']}"]]))
        attention.append(output.visual_attentions[row, start:end].float().mean(0).numpy())  # (49,)
    return TaggedEntities(tags, np.array(gold), np.stack(attention))


def probe_image_decided(
    model: AcnForTokenClassification,
    processor: AcnProcessor,
    split: Any,
    entries: Sequence[Mapping[str, Any]],
    fill: np.ndarray,
    seed: int = 0,
    draws: int = CONTROL_DRAWS,
) -> dict[str, Any]:
    """Attention share and occlusion effect over the image-decided entities `entries` of `split` (a split of the
    feature cache, rows in corpus order; `image_decided.json`'s list for that split).

    Returns a dict: `entities`, `attention_share` (mean), `chance_share` (mean share of the image the figure's cells
    are), `attention_peak_on_figure` (share of entities whose most attended cell is a figure cell), and `occlusion`:
    per condition (`none`, `figure_cells`, `other_cells`), the mean gold-tag probability and the share of entities
    whose tags change (against `none`).
    """
    if not entries:
        raise ValueError("no image-decided entities to probe: the split has none")
    model.eval()
    collator = AcnDataCollator(processor, image_source="features")
    rows: list[Mapping[str, Any]] = [
        {**split[int(entry["index"])], "image_features": np.asarray(split[int(entry["index"])]["image_features"])}
        for entry in entries
    ]  # image_features: (49, channels)
    cells = [list(entry["figure_cells"]) for entry in entries]
    clear = tag_entities(model, collator, rows, entries)
    shares = np.array([figure_share(map_, figure) for map_, figure in zip(clear.attention, cells, strict=True)])
    peaks = [int(map_.argmax()) in figure for map_, figure in zip(clear.attention, cells, strict=True)]

    def occlusion(cell_sets: list[list[int]]) -> TaggedEntities:
        occluded_rows: list[Mapping[str, Any]] = [
            {**row, "image_features": occluded(row["image_features"], chosen, fill)}
            for row, chosen in zip(rows, cell_sets, strict=True)
        ]
        return tag_entities(model, collator, occluded_rows, entries)

    def changed(tagged: TaggedEntities) -> np.ndarray:
        return np.array([after != before for after, before in zip(tagged.tags, clear.tags, strict=True)], dtype=float)

    figure = occlusion(cells)
    rngs = [np.random.default_rng([seed, int(entry["index"])]) for entry in entries]
    controls = [
        occlusion([other_cells(rng, figure) for rng, figure in zip(rngs, cells, strict=True)]) for _ in range(draws)
    ]
    return {
        "entities": len(entries),
        "attention_share": float(shares.mean()),
        "chance_share": float(np.mean([len(figure) / NUM_REGIONS for figure in cells])),
        "attention_peak_on_figure": float(np.mean(peaks)),
        "occlusion": {
            "none": {"gold_probability": float(clear.gold_probability.mean()), "tag_change_rate": 0.0},
            "figure_cells": {
                "gold_probability": float(figure.gold_probability.mean()),
                "tag_change_rate": float(changed(figure).mean()),
            },
            "other_cells": {
                "gold_probability": float(np.mean([control.gold_probability.mean() for control in controls])),
                "tag_change_rate": float(np.mean([changed(control).mean() for control in controls])),
                "draws": draws,
            },
        },
    }


__all__ = ["figure_share", "mean_cell", "occluded", "other_cells", "probe_image_decided", "tag_entities"]
