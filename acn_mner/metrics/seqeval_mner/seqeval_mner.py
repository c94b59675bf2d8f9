"""Entity-level precision, recall and F1 for BIO tagging, lenient (conlleval) and strict IOB2, as an `evaluate` metric.

Load it offline by path: `acn_mner.evaluation.load_metric()`, i.e. `evaluate.load(acn_mner.evaluation.METRIC_PATH)`.

- lenient: seqeval's default chunking, the conlleval convention of the MNER literature; an `I-X` that follows
  `O` or another type starts a new entity (5207 gold entities on the Twitter-2015 test split).
- strict: seqeval's IOB2 mode, where an entity must start with `B-X` (5072 on that split).
"""

from typing import Any

import datasets
import evaluate
from seqeval.metrics import accuracy_score, classification_report
from seqeval.scheme import IOB2

_CITATION = """\
@inproceedings{ramshaw-marcus-1995-text,
  title = "Text Chunking using Transformation-Based Learning",
  author = "Ramshaw, Lance and Marcus, Mitch",
  booktitle = "Third Workshop on Very Large Corpora",
  year = "1995"
}
@misc{seqeval,
  title = {{seqeval}: A Python framework for sequence labeling evaluation},
  author = {Hiroki Nakayama},
  year = {2018},
  url = {https://github.com/chakki-works/seqeval}
}
"""

_DESCRIPTION = __doc__

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[str]]`): predicted BIO tags, one list per sentence.
    references (`list[list[str]]`): gold BIO tags, same lengths as the predictions.
Returns:
    `overall_precision`, `overall_recall`, `overall_f1`, `overall_accuracy`, `num_gold_entities` (lenient);
    `strict_overall_precision`, `strict_overall_recall`, `strict_overall_f1`, `strict_num_gold_entities`;
    per entity type `TYPE: {precision, recall, f1, number}` (lenient) and `strict_TYPE: {...}`.
Example:
    >>> metric = evaluate.load(str(acn_mner.evaluation.METRIC_PATH))
    >>> metric.compute(predictions=[["B-PER", "I-PER", "O"]], references=[["B-PER", "I-PER", "O"]])["overall_f1"]
    1.0
"""

AVERAGE_ROWS = ("micro avg", "macro avg", "weighted avg")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SeqevalMner(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions: list[list[str]], references: list[list[str]]) -> dict[str, Any]:
        for index, (predicted, gold) in enumerate(zip(predictions, references, strict=True)):
            if len(predicted) != len(gold):
                raise ValueError(f"sentence {index}: {len(predicted)} predicted tags for {len(gold)} gold tags")
        results: dict[str, Any] = {}
        for prefix, options in (("", {}), ("strict_", {"mode": "strict", "scheme": IOB2})):
            report = classification_report(references, predictions, output_dict=True, zero_division=0, **options)
            micro = report["micro avg"]
            results[f"{prefix}overall_precision"] = float(micro["precision"])
            results[f"{prefix}overall_recall"] = float(micro["recall"])
            results[f"{prefix}overall_f1"] = float(micro["f1-score"])
            results[f"{prefix}num_gold_entities"] = int(micro["support"])
            for entity_type, row in report.items():
                if entity_type not in AVERAGE_ROWS:
                    results[f"{prefix}{entity_type}"] = {
                        "precision": float(row["precision"]),
                        "recall": float(row["recall"]),
                        "f1": float(row["f1-score"]),
                        "number": int(row["support"]),
                    }
        results["overall_accuracy"] = float(accuracy_score(references, predictions))
        return results
