"""The model card of a trained ACN folder: model-index metadata and the results tables."""

from pathlib import Path

from acn_commands.atomic import atomic_path
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from ner_report import table2

CARD_TEMPLATE = """\
---
{card_data}
---

# ACN ({variant}) for multimodal named-entity recognition in tweets

Adaptive Co-attention Network (Zhang, Fu, Liu, Huang, AAAI 2018), trained with `examples/train_acn.py` of
acn-mner on `{dataset}` (seed {seed}). Load it with remote code:

```python
from transformers import AutoModelForTokenClassification, AutoProcessor

model = AutoModelForTokenClassification.from_pretrained("{folder}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{folder}", trust_remote_code=True)
```

## Results

Entity-level scores (percent), selected on dev F1, in the layout of the paper's Table 2. "lenient" is the
conlleval/seqeval default chunking used by the literature; "strict IOB2" does not count entities that start
with an orphan `I-` tag.

{table}

## Training command

```
python examples/train_acn.py {command}
```

## Limitations

Trained on tweets of one period and region; the tag set is the corpus's. Tweets without an image are tagged
from their text alone (the filtration gate is closed), so their quality is that of the text-only model.
"""


def command_line(args) -> str:
    flags = sorted((key, value) for key, value in vars(args).items() if value is not None and value is not False)
    return " ".join(f"--{key}" if value is True else f"--{key} {value}" for key, value in flags)


def write_model_card(output_dir: Path, args, results: dict):
    """Write the card as model_card.md, and as README.md, the file the Hub renders."""
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="token-classification",
        tags=["ner", "multimodal", "twitter", "acn"],
        model_name=f"acn-{args.variant}",
        eval_results=[
            EvalResult(
                task_type="token-classification",
                dataset_type=str(args.dataset),
                dataset_name=Path(str(args.dataset)).name,
                dataset_split=split,
                metric_type=metric,
                metric_name=f"{split} entity {metric} (lenient)",
                metric_value=round(100 * results[split][f"overall_{metric}"], 2),
            )
            for split in ("test", "validation")
            for metric in ("precision", "recall", "f1")
        ],
    )
    text = CARD_TEMPLATE.format(
        card_data=card_data.to_yaml(),
        variant=args.variant,
        dataset=args.dataset,
        seed=args.seed,
        folder=output_dir,
        table=table2({f"{args.variant} (test)": results["test"], f"{args.variant} (dev)": results["validation"]}),
        command=command_line(args),
    )
    card = ModelCard(text)
    for name in ("model_card.md", "README.md"):
        with atomic_path(output_dir / name) as temporary:
            card.save(temporary)
