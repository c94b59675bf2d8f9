"""Corpus loading shared by the training, evaluation and benchmark scripts (batches: `modeling_acn.AcnDataCollator`)."""

from pathlib import Path

import datasets

from .corpus import load_twitter_mner

SPLITS = ("train", "validation", "test")


def load_corpus(source: str, image_dir: str | None = None) -> datasets.DatasetDict:
    """A corpus as a `DatasetDict` with `train`/`validation`/`test`.

    `source` is the raw layout (`train.txt`, `valid.txt`, `test.txt`; images from `image_dir`), a folder written
    by `Dataset.save_to_disk` (e.g. with cached image features), a Parquet folder from the corpus loader, or a
    Hub dataset id.
    """
    path = Path(source)
    if (path / "train.txt").is_file():
        return load_twitter_mner(path, image_dir)
    if (path / "dataset_dict.json").is_file():
        return datasets.load_from_disk(str(path))
    return datasets.load_dataset(source)


def label_names(corpus: datasets.DatasetDict) -> list[str]:
    return list(corpus["train"].features["ner_tags"].feature.names)


def image_source(split: datasets.Dataset, use_image: bool) -> str:
    """Where a split's images come from: `features` (cached column), `pixels` (image column with at least one image),
    or `none` (a text-only model, or a corpus without images: the model then takes its text path)."""
    if use_image and "image_features" in split.column_names:
        return "features"
    if use_image and "image" in split.column_names and split.data.column("image").null_count < split.num_rows:
        return "pixels"
    return "none"


def model_rows(split: datasets.Dataset, source: str) -> datasets.Dataset:
    """The split as the collator reads it: cached features arrive as numpy arrays straight from Arrow (4x faster
    than nested Python lists, which would cost more per epoch than the model's forward pass)."""
    if source != "features":
        return split
    unread = [column for column in ("image", "image_problem") if column in split.column_names]  # never decoded
    return split.remove_columns(unread).with_format(
        "numpy", columns=["image_features", "image_mask"], output_all_columns=True
    )
