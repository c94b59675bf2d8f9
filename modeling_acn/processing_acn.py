"""Processor for ACN: tweet text (with optional word labels) and images to one batch for the model."""

from collections.abc import Mapping, Sequence

import numpy as np
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .configuration_acn import IGNORE_INDEX
from .image_processing_acn import AcnImageProcessor, _ImageInput, _ImageInputs
from .tokenization_acn import AcnTokenizer

RETURN_TENSORS = ("pt", "np", None)


class AcnProcessor(ProcessorMixin):
    """Runs `AcnTokenizer` and `AcnImageProcessor` and merges their outputs, with word labels aligned.

    Args:
        image_processor: an `AcnImageProcessor`.
        tokenizer: an `AcnTokenizer`.
    """

    def __init__(self, image_processor: AcnImageProcessor, tokenizer: AcnTokenizer) -> None:
        super().__init__(image_processor, tokenizer)

    def __call__(
        self,
        text: str | list[str] | list[list[str]],
        images: _ImageInputs = None,
        labels: Sequence[Sequence[int | str]] | None = None,
        label2id: Mapping[str, int] | None = None,
        is_split_into_words: bool = False,
        padding: bool | str = True,
        truncation: bool = False,
        max_length: int | None = None,
        return_offsets_mapping: bool = False,
        return_tensors: str | None = "pt",
    ) -> BatchFeature:
        """Encode a batch of tweets and their images.

        Args:
            text: raw tweets, or lists of words with `is_split_into_words=True` (see `AcnTokenizer.__call__`).
            images: one entry per tweet (PIL image, uint8 array, path or `None`); `None` for no images at all.
            labels: one label per word for each tweet, as ids or as strings mapped through `label2id`.
            label2id: mapping from label strings to ids; needed when `labels` holds strings.
            padding, truncation, max_length, return_offsets_mapping: as in `AcnTokenizer.__call__`.
            return_tensors: `"pt"` for torch tensors, `"np"` for numpy arrays, `None` for python lists.

        Returns:
            A `BatchFeature`: `input_ids` (batch, seq_len) int64, `char_ids` (batch, seq_len, char_len) int64,
            `attention_mask` (batch, seq_len) int64; with `images`, also `pixel_values` (batch, 3, height, width)
            float32 and `image_mask` (batch,) bool; and, when asked for, `labels` (batch, seq_len) int64 with -100 on
            padding and `offset_mapping` (batch, seq_len, 2) int64. With `return_tensors=None`, nested lists of
            python numbers of those shapes.
        """
        if return_tensors not in RETURN_TENSORS:
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
        text_inputs = self.tokenizer(
            text,
            is_split_into_words=is_split_into_words,
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            return_tensors="np",
            return_offsets_mapping=return_offsets_mapping,
        )
        data = dict(text_inputs)
        if images is not None:  # without images the model takes its text path for the whole batch
            images = _as_list(images)
            batch_size = text_inputs["input_ids"].shape[0]
            if len(images) != batch_size:
                raise ValueError(f"got {len(images)} images for {batch_size} texts; use None for a tweet without image")
            data.update(self.image_processor(images, return_tensors="np"))
        if labels is not None:
            word_counts = text_inputs["attention_mask"].sum(axis=1).tolist()  # (batch,)
            seq_len = text_inputs["input_ids"].shape[1]
            data["labels"] = _align_labels(labels, word_counts, seq_len, label2id, max_length if truncation else None)
        if return_tensors is None:
            data = {key: value.tolist() for key, value in data.items()}
        return BatchFeature(data, tensor_type=return_tensors)


AcnProcessor.register_for_auto_class("AutoProcessor")


def _as_list(images: _ImageInputs) -> list[_ImageInput]:
    return list(images) if isinstance(images, (list, tuple)) else [images]


def _align_labels(
    labels: Sequence[Sequence[int | str]],
    word_counts: list[int],
    seq_len: int,
    label2id: Mapping[str, int] | None,
    truncated_at: int | None,
) -> np.ndarray:
    """Word labels as a (batch, seq_len) int64 array padded with -100; labels past a truncation are dropped."""
    if len(labels) != len(word_counts):
        raise ValueError(f"got {len(labels)} label sequences for {len(word_counts)} texts")
    aligned = np.full((len(word_counts), seq_len), IGNORE_INDEX, dtype=np.int64)  # (batch, seq_len)
    for index, (example_labels, count) in enumerate(zip(labels, word_counts, strict=True)):
        was_truncated = truncated_at is not None and count == truncated_at and len(example_labels) > count
        if len(example_labels) != count and not was_truncated:
            raise ValueError(f"example {index} has {count} words but {len(example_labels)} labels")
        ids = [_label_id(label, label2id) for label in example_labels[:count]]
        aligned[index, :count] = ids  # (count,)
    return aligned


def _label_id(label: int | str, label2id: Mapping[str, int] | None) -> int:
    if not isinstance(label, str):
        return int(label)
    if label2id is None:
        raise ValueError(f"label {label!r} is a string: pass label2id to map it to an id")
    if label not in label2id:
        raise ValueError(f"label {label!r} is not in label2id ({sorted(label2id)})")
    return label2id[label]


__all__ = ["AcnProcessor"]
