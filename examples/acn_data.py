"""Corpus loading and batch collation shared by the training, evaluation and prediction scripts."""

from pathlib import Path

import datasets
import numpy as np
import torch

from dataset_script.twitter_mner import load_twitter_mner

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


class AcnCollator:
    """Rows of the corpus -> one model batch: the processor's text and label tensors, plus the images.

    `source` (see `image_source`): cached `image_features` (VGG never runs), `image` through the image
    processor, or `none`. Training only: `max_length` truncates words (evaluation passes `None` and scores every
    word), and `word_dropout` replaces each word id by `[UNK]` with that probability, so that the model learns to
    tag unknown words from their characters and context.
    """

    def __init__(self, processor, source: str, max_length: int | None = None, word_dropout: float = 0.0):
        self.processor = processor
        self.source = source
        self.max_length = max_length
        self.word_dropout = word_dropout

    @property
    def unk_id(self) -> int:
        return self.processor.tokenizer.unk_token_id

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = dict(
            self.processor(
                [row["tokens"] for row in rows],
                images=[row["image"] for row in rows] if self.source == "pixels" else None,
                labels=[row["ner_tags"] for row in rows],
                is_split_into_words=True,
                truncation=self.max_length is not None,
                max_length=self.max_length,
            )
        )
        if self.word_dropout:
            dropped = torch.rand(batch["input_ids"].shape) < self.word_dropout  # (batch, seq_len)
            batch["input_ids"] = batch["input_ids"].masked_fill(dropped & batch["attention_mask"].bool(), self.unk_id)
        if self.source == "features":
            features = np.stack([np.asarray(row["image_features"], dtype=np.float32) for row in rows])
            batch["image_features"] = torch.from_numpy(features)  # (batch, 49, 512)
            batch["image_mask"] = torch.tensor([bool(row["image_mask"]) for row in rows])  # (batch,)
        return batch
