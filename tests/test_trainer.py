"""A plain transformers.Trainer trains and evaluates ACN with the package's collator and CRF-decoded metrics."""

import warnings

import numpy as np
import pytest
import torch
from datasets import Array2D, ClassLabel, Dataset, Features, List, Value
from transformers import EvalPrediction, Trainer, TrainingArguments

from acn_mner.evaluation import load_metric, score
from modeling_acn import (
    AcnConfig,
    AcnDataCollator,
    AcnEntityMetrics,
    AcnForTokenClassification,
    AcnImageProcessor,
    AcnProcessor,
    AcnTokenizer,
    AcnViterbiTags,
)
from tests.conftest import TINY_SIZES
from tests.training_fixtures import TWEETS

LABELS = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-OTHER", "I-OTHER", "B-PER", "I-PER"]


def tiny_split(seed: int = 0) -> Dataset:
    """The six tweets with random cached pool5 features, the columns the corpus loader and feature cache write."""
    features = Features(
        {
            "tokens": List(Value("string")),
            "ner_tags": List(ClassLabel(names=LABELS)),
            "image_features": Array2D(shape=(49, 512), dtype="float32"),
            "image_mask": Value("bool"),
        }
    )
    rng = np.random.default_rng(seed)
    return Dataset.from_dict(
        {
            "tokens": [[word for word, _ in tweet] for _, tweet in TWEETS],
            "ner_tags": [[LABELS.index(tag) for _, tag in tweet] for _, tweet in TWEETS],
            "image_features": list(rng.random((len(TWEETS), 49, 512), dtype=np.float32)),
            "image_mask": [True, False, True, True, False, True],
        },
        features=features,
    )


def tiny_model_and_processor(split: Dataset):
    torch.manual_seed(0)
    tokenizer = AcnTokenizer.from_corpus(split["tokens"])
    sizes = {**TINY_SIZES, "vocab_size": len(tokenizer), "char_vocab_size": tokenizer.char_vocab_size}
    model = AcnForTokenClassification(AcnConfig(**sizes, id2label=dict(enumerate(LABELS))))
    return model, AcnProcessor(AcnImageProcessor(), tokenizer)


def trainer_for(model, processor, split, output_dir, **arguments) -> Trainer:
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=2,
        per_device_eval_batch_size=4,  # 6 tweets: the second batch has other lengths, so Trainer pads across batches
        learning_rate=0.02,
        remove_unused_columns=False,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        seed=1,
        **arguments,
    )
    return Trainer(
        model=model,
        args=args,
        train_dataset=split,
        eval_dataset=split,
        data_collator=AcnDataCollator(processor, image_source="features"),
        preprocess_logits_for_metrics=AcnViterbiTags(model),
        compute_metrics=AcnEntityMetrics(model.config.id2label),
    )


@pytest.mark.slow
def test_plain_trainer_trains_and_scores_like_the_training_script(tmp_path):
    split = tiny_split()
    model, processor = tiny_model_and_processor(split)
    trainer = trainer_for(model, processor, split, tmp_path, num_train_epochs=30, logging_steps=10)
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert {"eval_loss", "eval_precision", "eval_recall", "eval_f1", "eval_accuracy"} <= set(after)
    assert after["eval_loss"] < before["eval_loss"] / 4
    assert after["eval_f1"] > before["eval_f1"] and after["eval_f1"] == 1.0

    # the same F1 from the model's own Viterbi paths and the project's seqeval module, batch by batch
    model.eval()
    batch = AcnDataCollator(processor, "features")(list(split))
    with torch.no_grad():
        logits = model(**{key: value for key, value in batch.items() if key != "labels"}).logits
    predicted = [[LABELS[tag] for tag in path] for path in model.decode(logits, batch["attention_mask"])]
    gold = [[LABELS[tag] for tag in tags] for tags in split["ner_tags"]]
    assert after["eval_f1"] == pytest.approx(score(load_metric(), predicted, gold)["overall_f1"])


def test_trainer_predictions_are_the_logits_alone(tmp_path):
    """Without preprocess_logits_for_metrics, EvalPrediction.predictions is the logits, as run_ner expects."""
    split = tiny_split()
    model, processor = tiny_model_and_processor(split)
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(tmp_path),
            per_device_eval_batch_size=6,
            remove_unused_columns=False,
            report_to=[],
            use_cpu=True,
        ),
        data_collator=AcnDataCollator(processor, image_source="features"),
    )
    output = trainer.predict(split)
    assert isinstance(output.predictions, np.ndarray)
    assert output.predictions.shape == (6, max(len(tweet) for _, tweet in TWEETS), len(LABELS))


def test_viterbi_tags_keep_padding_and_match_decode():
    split = tiny_split()
    model, processor = tiny_model_and_processor(split)
    batch = AcnDataCollator(processor, "features")(list(split))
    with torch.no_grad():
        logits = model(**batch).logits  # (6, seq_len, 9)
    tags = AcnViterbiTags(model)(logits, batch["labels"])
    paths = model.decode(logits, batch["attention_mask"])
    for row, path in zip(tags.tolist(), paths, strict=True):
        assert row[: len(path)] == path and set(row[len(path) :]) <= {-100}


def test_viterbi_tags_decode_a_word_labelled_minus_100_with_its_tweet():
    """A word whose label is -100 (ignored) before the tweet's last labelled word is decoded with the others: the tags
    up to there are the whole tweet's Viterbi path."""
    split = tiny_split()
    model, processor = tiny_model_and_processor(split)
    batch = AcnDataCollator(processor, "features")(list(split))
    with torch.no_grad():
        logits = model(**batch).logits  # (6, seq_len, 9)
    labels = batch["labels"].clone()
    lengths = batch["attention_mask"].sum(-1).tolist()
    labels[0, 0] = labels[0, 2] = -100  # the first word, and one inside
    labels[1, lengths[1] - 1] = -100  # the last word: decoded as padding, and left out of the scores anyway
    tags = AcnViterbiTags(model)(logits, labels)
    paths = model.decode(logits, batch["attention_mask"])
    assert tags[0, : lengths[0]].tolist() == paths[0]
    assert tags[1, : lengths[1] - 1].tolist() == model.decode(logits[1:2, : lengths[1] - 1])[0]


def test_entity_metrics_by_hand():
    id2label = dict(enumerate(["O", "B-PER", "I-PER", "B-LOC"]))
    labels = np.array([[1, 2, 0, 3], [3, 0, -100, -100]])  # entities: PER(0-1), LOC(3); LOC(0)
    predictions = np.array([[1, 2, 0, 0], [3, 1, -100, -100]])  # PER right, LOC missed; LOC right, a wrong PER
    scores = AcnEntityMetrics(id2label)(EvalPrediction(predictions=predictions, label_ids=labels))
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3) and scores["accuracy"] == pytest.approx(4 / 6)


def test_entity_metrics_of_a_model_that_predicts_no_entity_are_zero_without_a_warning():
    """An untrained model tags every word O: precision is undefined, and reported as 0 (seqeval's choice), without
    seqeval's UndefinedMetricWarning at every evaluation."""
    id2label = dict(enumerate(["O", "B-PER", "I-PER"]))
    labels = np.array([[1, 2, 0], [0, 1, -100]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = AcnEntityMetrics(id2label)(EvalPrediction(predictions=np.zeros_like(labels), label_ids=labels))
    assert scores["precision"] == scores["recall"] == scores["f1"] == 0.0
    assert scores["accuracy"] == pytest.approx(2 / 5)


def test_metrics_and_collator_errors_name_the_fix():
    split = tiny_split()
    _, processor = tiny_model_and_processor(split)
    with pytest.raises(ValueError, match=r"lack the columns \['ner_tags', 'tokens'\].*remove_unused_columns=False"):
        AcnDataCollator(processor, "none")([{"input_ids": [1, 2]}])
    with pytest.raises(ValueError, match="image_source must be 'features', 'pixels' or 'none', got 'cache'"):
        AcnDataCollator(processor, "cache")
    logits = np.zeros((2, 4, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"preprocess_logits_for_metrics=AcnViterbiTags\(model\).*\(2, 4, 3\)"):
        AcnEntityMetrics({0: "O", 1: "B-PER", 2: "I-PER"})(
            EvalPrediction(predictions=logits, label_ids=np.zeros((2, 4)))
        )
    tags = np.zeros((2, 4), dtype=np.int64)
    with pytest.raises(ValueError, match=r"label_ids must be one array of tag ids.*got tuple of shape \(2, 2, 4\)"):
        AcnEntityMetrics({0: "O", 1: "B-PER", 2: "I-PER"})(EvalPrediction(predictions=tags, label_ids=(tags, tags)))
