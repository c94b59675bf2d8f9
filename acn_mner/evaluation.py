"""Entity scores through the local seqeval metric, and the paper's Table 2 layout for reporting them."""

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import datasets
import evaluate
import torch
from accelerate import Accelerator

from .atomic import atomic_path, write_text

METRIC_PATH = Path(__file__).resolve().parent / "metrics" / "seqeval_mner"  # installed with the package
TYPE_ORDER = ("PER", "LOC", "ORG", "OTHER", "MISC")  # the paper's column order; a corpus has OTHER or MISC


def load_metric() -> evaluate.EvaluationModule:
    """The seqeval metric module shipped with the project, loaded by path (no Hub access)."""
    return evaluate.load(str(METRIC_PATH))


def score(
    metric: evaluate.EvaluationModule, predictions: list[list[str]], references: list[list[str]]
) -> dict[str, Any]:
    """Lenient and strict entity scores of full tag sequences; refuses a prediction shorter than its tweet."""
    for index, (predicted, gold) in enumerate(zip(predictions, references, strict=True)):
        if len(predicted) != len(gold):
            raise ValueError(f"tweet {index}: {len(predicted)} predicted tags for {len(gold)} words")
    return metric.compute(predictions=predictions, references=references)


def predict_split(
    accelerator: Accelerator, model: torch.nn.Module, loader: Iterable[dict[str, Any]]
) -> list[list[str]]:
    """Best tag sequence of every tweet (plain Viterbi, as the paper), in dataset order, from all processes."""
    model.eval()
    unwrapped = accelerator.unwrap_model(model)
    id2label = unwrapped.config.id2label
    predictions = []
    for batch in loader:
        batch = {key: value for key, value in batch.items() if key != "labels"}
        with torch.no_grad():
            logits = model(**batch).logits  # (batch, seq_len, num_labels)
        tags = unwrapped.decode(logits, batch["attention_mask"])
        named = [[id2label[tag] for tag in tweet] for tweet in tags]
        predictions.extend(accelerator.gather_for_metrics(named, use_gather_object=True))
    return predictions


def gold_tags(split: datasets.Dataset) -> list[list[str]]:
    names = split.features["ner_tags"].feature.names
    return [[names[tag] for tag in tags] for tags in split["ner_tags"]]


def entity_types(scores: dict[str, Any]) -> list[str]:
    found = [key for key, value in scores.items() if isinstance(value, dict) and not key.startswith("strict_")]
    return sorted(found, key=lambda name: (TYPE_ORDER.index(name) if name in TYPE_ORDER else len(TYPE_ORDER), name))


def table_rows(name: str, scores: dict[str, Any], types: list[str]) -> list[list[str]]:
    """One lenient and one strict row: per-type F1, then overall precision, recall and F1, in percent."""
    rows = []
    for prefix, label in (("", "lenient"), ("strict_", "strict IOB2")):
        per_type = [_percent(scores.get(f"{prefix}{kind}", {}).get("f1", 0.0)) for kind in types]
        overall = [_percent(scores[f"{prefix}overall_{key}"]) for key in ("precision", "recall", "f1")]
        rows.append([name, label, *per_type, *overall, str(scores[f"{prefix}num_gold_entities"])])
    return rows


def table2(results: dict[str, dict[str, Any]]) -> str:
    """Markdown table in the layout of the paper's Table 2, one model per entry of `results`."""
    types = entity_types(next(iter(results.values())))
    header = ["Model", "Scoring", *types, "Precision", "Recall", "F1", "Gold entities"]
    rows = [row for name, scores in results.items() for row in table_rows(name, scores, types)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_predictions(path: Path, tokens: list[list[str]], gold: list[list[str]], predicted: list[list[str]]) -> None:
    """CoNLL-style `token gold pred` lines, a blank line between tweets (conlleval's input format); atomically."""
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8") as handle:
        for words, gold_tags, predicted_tags in zip(tokens, gold, predicted, strict=True):
            for word, gold_tag, predicted_tag in zip(words, gold_tags, predicted_tags, strict=True):
                handle.write(f"{word} {gold_tag} {predicted_tag}\n")
            handle.write("\n")


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _percent(value: float) -> str:
    return f"{100 * value:.2f}"
