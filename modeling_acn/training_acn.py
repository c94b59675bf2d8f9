"""What `transformers.Trainer` needs to train and evaluate ACN: the batch collator and CRF-decoded entity metrics.

trainer = Trainer(
    model=model,
    args=TrainingArguments(..., remove_unused_columns=False),  # the collator reads the corpus columns
    train_dataset=corpus["train"],
    eval_dataset=corpus["validation"],
    data_collator=AcnDataCollator(processor, image_source="pixels"),
    preprocess_logits_for_metrics=AcnViterbiTags(model),
    compute_metrics=AcnEntityMetrics(model.config.id2label),
)
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities
from transformers import EvalPrediction

from .configuration_acn import IGNORE_INDEX
from .processing_acn import AcnProcessor

if TYPE_CHECKING:  # modeling_acn is heavy, and only its decode is called here
    from .modeling_acn import AcnForTokenClassification

IMAGE_SOURCES = ("features", "pixels", "none")
TRUNK_COLUMN = "image_features_trunk"  # a feature cache's column, and the model's forward argument of that name


class AcnDataCollator:
    """Corpus rows -> one model batch: the processor's text and label tensors, plus the images.

    Rows are those of the corpus loader (`acn_mner.corpus`): `tokens`, `ner_tags`, and `image` or cached
    `image_features`/`image_mask` (with `image_features_trunk`, the id of the trunk that computed them, which goes
    into the batch: the model refuses features from a trunk other than its own). With `Trainer`, set
    `TrainingArguments(remove_unused_columns=False)`, or it drops these columns (they are not arguments of the model's
    forward).

    Args:
        processor: an `AcnProcessor`.
        image_source (`str`): `"features"` (cached `image_features`; VGG never runs), `"pixels"` (the `image`
            column through the image processor) or `"none"` (no images: the model takes its text path).
        max_length (`int`, *optional*): training only, truncate tweets to this many words (evaluation scores every
            word, so leave it None there).
        word_dropout (`float`): training only, replace each word id by `[UNK]` with this probability, so that the
            model learns to tag unknown words from their characters and context.
        mention_replacement (`AcnMentionReplacement`, *optional*): training only, swap entity mentions for others of
            their type before the words are indexed.
    """

    def __init__(
        self,
        processor: AcnProcessor,
        image_source: str,
        max_length: int | None = None,
        word_dropout: float = 0.0,
        mention_replacement: "AcnMentionReplacement | None" = None,
    ) -> None:
        if image_source not in IMAGE_SOURCES:
            raise ValueError(f"image_source must be 'features', 'pixels' or 'none', got {image_source!r}")
        if not 0.0 <= word_dropout <= 1.0:
            raise ValueError(f"word_dropout must be in [0, 1], got {word_dropout!r}")
        self.processor = processor
        self.image_source = image_source
        self.max_length = max_length
        self.word_dropout = word_dropout
        self.mention_replacement = mention_replacement

    @property
    def unk_id(self) -> int:
        return self.processor.tokenizer.unk_token_id

    def __call__(self, rows: list[Mapping[str, Any]]) -> dict[str, Any]:
        self._check_columns(rows[0])
        if self.mention_replacement is not None:
            rows = [self.mention_replacement(row) for row in rows]
        batch = dict(
            self.processor(
                [row["tokens"] for row in rows],
                images=[row["image"] for row in rows] if self.image_source == "pixels" else None,
                labels=[row["ner_tags"] for row in rows],
                is_split_into_words=True,
                truncation=self.max_length is not None,
                max_length=self.max_length,
            )
        )
        if self.word_dropout:
            dropped = torch.rand(batch["input_ids"].shape) < self.word_dropout  # (batch, seq_len)
            batch["input_ids"] = batch["input_ids"].masked_fill(dropped & batch["attention_mask"].bool(), self.unk_id)
        if self.image_source == "features":
            features = np.stack([np.asarray(row["image_features"], dtype=np.float32) for row in rows])
            batch["image_features"] = torch.from_numpy(features)  # (batch, 49, 512)
            batch["image_mask"] = torch.tensor([bool(row["image_mask"]) for row in rows])  # (batch,)
            trunks = {row[TRUNK_COLUMN] for row in rows if row.get(TRUNK_COLUMN) is not None}
            if len(trunks) > 1:
                raise ValueError(
                    f"rows of one batch have image features from {len(trunks)} different trunks: {sorted(trunks)}"
                )
            if trunks:
                batch[TRUNK_COLUMN] = trunks.pop()
        return batch

    def _check_columns(self, row: Mapping[str, Any]) -> None:
        needed = {"tokens", "ner_tags"} | {"features": {"image_features", "image_mask"}, "pixels": {"image"}}.get(
            self.image_source, set()
        )
        missing = sorted(needed - set(row))
        if missing:
            raise ValueError(
                f"rows lack the columns {missing} (they have {sorted(row)}); with Trainer, pass "
                "TrainingArguments(remove_unused_columns=False) so that it keeps the corpus columns"
            )


class AcnMentionReplacement:
    """Training augmentation by mention replacement (Dai and Adel, COLING 2020): each entity mention of a tweet is,
    with probability `probability`, replaced by a mention of the same type drawn uniformly from the training split's
    mentions (so frequent mentions come back more often); its tags become `B-type` then `I-type` over the new
    words; a mention of a type the training split lacks is kept. Other words, the image and the other columns are
    kept. Draws come from torch's global generator, which `examples/train_acn.py` seeds per batch. `Trainer`
    collates evaluation batches with its one `data_collator` too, so give it a collator without replacement there
    (or subclass `Trainer.get_eval_dataloader`); `train_acn.py --mention_replacement` does this itself.

    Args:
        tokens (`list[list[str]]`), ner_tags (`list[list[int]]`): the training split's words and tag ids, whose
            mentions are drawn.
        id2label (`dict[int, str]`): tag names of the ids (BIO: `B-PER`, `I-PER`, `O`, ...).
        probability (`float`): chance of replacing each mention, in [0, 1].
    """

    def __init__(
        self,
        tokens: Sequence[Sequence[str]],
        ner_tags: Sequence[Sequence[int]],
        id2label: Mapping[int, str],
        probability: float,
    ) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"mention replacement probability must be in [0, 1], got {probability!r}")
        self.id2label = {int(index): label for index, label in id2label.items()}
        label2id = {label: index for index, label in self.id2label.items()}
        self.probability = probability
        self.mentions: dict[str, list[list[str]]] = {}
        for words, tags in zip(tokens, ner_tags, strict=True):
            for kind, start, end in self.spans(tags):
                self.mentions.setdefault(kind, []).append(list(words[start : end + 1]))
        missing = sorted(
            f"{prefix}-{kind}" for kind in self.mentions for prefix in "BI" if f"{prefix}-{kind}" not in label2id
        )
        if missing:
            raise ValueError(f"id2label lacks {missing}, which mention replacement writes (it has {sorted(label2id)})")
        self.begin = {kind: label2id[f"B-{kind}"] for kind in self.mentions}
        self.inside = {kind: label2id[f"I-{kind}"] for kind in self.mentions}

    def spans(self, tags: Iterable[int]) -> list[tuple[str, int, int]]:
        """(type, first word, last word) of each mention, chunked as seqeval scores them."""
        return get_entities([self.id2label[int(tag)] for tag in tags])

    def __call__(self, row: Mapping[str, Any]) -> Mapping[str, Any]:
        words: list[str] = []
        tags: list[int] = []
        done = 0
        for kind, start, end in self.spans(row["ner_tags"]):
            if kind not in self.mentions or torch.rand(()) >= self.probability:
                continue
            choices = self.mentions[kind]
            mention = choices[int(torch.randint(len(choices), ()))]
            words += list(row["tokens"][done:start]) + mention
            tags += (
                [int(tag) for tag in row["ner_tags"][done:start]]
                + [self.begin[kind]]
                + [self.inside[kind]] * (len(mention) - 1)
            )
            done = end + 1
        if not done:
            return row
        return {
            **row,
            "tokens": words + list(row["tokens"][done:]),
            "ner_tags": tags + [int(tag) for tag in row["ner_tags"][done:]],
        }


class AcnViterbiTags:
    """`preprocess_logits_for_metrics` for `Trainer`: each evaluation batch's logits become the model's best tag
    paths (Viterbi through the CRF; argmax for a softmax decoder), `(batch, seq_len)` tag ids with -100 at padding.

    Decoding needs the CRF's transitions, which `compute_metrics` never sees, so it happens here, batch by batch
    (it also keeps Trainer from holding every batch's logits). A tweet is decoded up to its last position whose label
    is not -100 (padding follows the words); a word labelled -100 before it is decoded with the others, and
    `AcnEntityMetrics` leaves it out of the scores, as transformers' run_ner does.

    Args:
        model: the `AcnForTokenClassification` being trained (its current CRF is used).
        constrain_bio (`bool`): forbid `I-X` after anything but `B-X`/`I-X`, as the pipeline does; False scores
            plain Viterbi paths, as `examples/train_acn.py` and the paper do.
    """

    def __init__(self, model: "AcnForTokenClassification", constrain_bio: bool = False) -> None:
        self.model = model
        self.constrain_bio = constrain_bio

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None:
            raise ValueError(
                "AcnViterbiTags needs the labels, whose -100 marks padding: evaluate a split with ner_tags"
            )
        positions = torch.arange(1, labels.shape[1] + 1, device=labels.device)  # (seq_len,)
        extents = ((labels != IGNORE_INDEX) * positions).amax(-1)  # (batch,): one past the last labelled position
        word_mask = positions[None, :] <= extents[:, None]  # (batch, seq_len), left-aligned
        paths = self.model.decode(logits, word_mask, constrain_bio=self.constrain_bio)
        tags = torch.full_like(labels, IGNORE_INDEX)  # (batch, seq_len)
        for row, path in enumerate(paths):
            tags[row, : len(path)] = torch.tensor(path, dtype=tags.dtype)
        return tags


class AcnEntityMetrics:
    """`compute_metrics` for `Trainer`: entity precision, recall and F1 (seqeval's default, conlleval's lenient
    chunking, as the literature reports) and tag accuracy, from the tag ids of `AcnViterbiTags`.

    Args:
        id2label (`dict[int, str]`): the model's `config.id2label`.
    """

    def __init__(self, id2label: Mapping[int, str]) -> None:
        self.id2label = {int(index): label for index, label in id2label.items()}

    def __call__(self, eval_prediction: EvalPrediction) -> dict[str, float]:
        predictions, label_ids = eval_prediction.predictions, eval_prediction.label_ids
        if isinstance(predictions, tuple) or np.ndim(predictions) != 2:
            raise ValueError(
                "predictions must be tag ids (examples, seq_len): "
                "pass preprocess_logits_for_metrics=AcnViterbiTags(model) "
                f"to Trainer, got {type(predictions).__name__} of shape {np.shape(predictions)}"
            )
        if isinstance(label_ids, tuple) or np.ndim(label_ids) != 2:  # a model with several label inputs
            raise ValueError(
                "label_ids must be one array of tag ids (examples, seq_len), -100 at padding, "
                f"got {type(label_ids).__name__} of shape {np.shape(label_ids)}"
            )
        predicted, gold = self.tag_names(predictions, label_ids)
        # A model that predicts no entity (or a split without any) has an undefined precision (recall): 0, as
        # seqeval then reports it, here without its warning about the choice.
        return {
            "precision": precision_score(gold, predicted, zero_division=0),
            "recall": recall_score(gold, predicted, zero_division=0),
            "f1": f1_score(gold, predicted, zero_division=0),
            "accuracy": accuracy_score(gold, predicted),
        }

    def tag_names(self, predictions: np.ndarray, label_ids: np.ndarray) -> tuple[list[list[str]], list[list[str]]]:
        """Predicted and gold tag names of every tweet's words (the positions whose label is not -100)."""
        predicted, gold = [], []
        for predicted_row, gold_row in zip(predictions, label_ids, strict=True):
            words = gold_row != IGNORE_INDEX  # (seq_len,)
            predicted.append([self.id2label[int(tag)] for tag in predicted_row[words]])
            gold.append([self.id2label[int(tag)] for tag in gold_row[words]])
        return predicted, gold


__all__ = ["AcnDataCollator", "AcnEntityMetrics", "AcnViterbiTags", "AcnMentionReplacement"]
