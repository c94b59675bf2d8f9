"""The model card of a trained ACN folder: Hub metadata (license, language, datasets, base model, model-index) and
the results tables."""

import argparse
import shlex
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from modeling_acn import PAPER_TEXT_ENCODER

from .atomic import atomic_path
from .evaluation import table2

LICENSE = "apache-2.0"  # the project's (setup.cfg, LICENSE); the weights are released under it too
CARD_TEMPLATE = """\
---
{card_data}
---

# ACN ({variant}) for multimodal named-entity recognition in tweets

Adaptive Co-attention Network (Zhang, Fu, Liu, Huang, AAAI 2018), trained with `examples/train_acn.py` of
acn-mner on {dataset} (seed {seed}){encoder}. It tags the words of a tweet (PER, LOC, ORG, and the corpus's fourth
type) using the tweet's image when there is one. The model's code comes with it, so loading runs that code
(`trust_remote_code=True`). transformers' token-classification pipeline gives one entry per tagged word:

```python
from transformers import pipeline

ner = pipeline("token-classification", model="{folder}", trust_remote_code=True)
ner("Obama visits Paris")  # a {{entity, score, index, word, start, end}} dict per word not tagged O
```

The multimodal-ner pipeline (the same code) groups the words into entities by default, and both take the
tweet's image:

```python
ner = pipeline("multimodal-ner", model="{folder}", trust_remote_code=True)
ner("Obama visits Paris", image="photo.jpg")  # an image path, a PIL image, or None for text only
```

or the model and processor themselves:

```python
from transformers import AutoModelForTokenClassification, AutoProcessor

model = AutoModelForTokenClassification.from_pretrained("{folder}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{folder}", trust_remote_code=True)
inputs = processor(["Obama visits Paris"], images=["photo.jpg"])
tags = model.decode(model(**inputs).logits, inputs["attention_mask"], constrain_bio=True)
```

The Hub's hosted inference is off (`inference: false`): the HF Inference API does not run a repository's own code,
and this model runs only with it (its tokenizer, processor, pipeline and model classes are in this repository);
the widget's text box has no place for the image either. The pipelines above run it wherever transformers runs.

## Results

Entity-level scores (percent), selected on dev F1, in the layout of the paper's Table 2. "lenient" is the
conlleval/seqeval default chunking used by the literature; "strict IOB2" does not count entities that start
with an orphan `I-` tag.

{table}

## Training command

```
python examples/train_acn.py {command}
```

The recipe in effect, defaults included: {recipe}.

## Limitations

Trained on tweets of one period and region; the tag set is the corpus's. Tweets without an image are tagged
from their text alone (the filtration gate is closed), so their quality is that of the text-only model.

## License

The code and these weights: Apache-2.0. The training corpus keeps its own terms (see its dataset card).
"""


def command_line(args: argparse.Namespace) -> str:
    """The training command's arguments as the user gave them (not the parsed settings, whose names include
    deprecated flags' and internal ones)."""
    return shlex.join(str(argument) for argument in args.argv)


def is_local_path(name: str) -> bool:
    return Path(str(name)).exists()


def hub_dataset_id(args: argparse.Namespace) -> str | None:
    """The corpus as a Hub dataset id: --hub_dataset_id, or --dataset itself when it is not a local folder."""
    if args.hub_dataset_id:
        return args.hub_dataset_id
    return None if is_local_path(args.dataset) else str(args.dataset)


def base_model(args: argparse.Namespace) -> str | None:
    """The pretrained text encoder's Hub id (--hub_base_model for a local folder); None for the paper's encoder."""
    if args.text_encoder == PAPER_TEXT_ENCODER:
        return None
    if args.hub_base_model:
        return args.hub_base_model
    return None if is_local_path(args.text_encoder) else str(args.text_encoder)


def eval_results(dataset_id: str, results: dict) -> list[EvalResult]:
    return [
        EvalResult(
            task_type="token-classification",
            task_name="Named-entity recognition",
            dataset_type=dataset_id,
            dataset_name=dataset_id,
            dataset_split=split,
            metric_type=metric,
            metric_name=f"{split} entity {metric} (lenient)",
            metric_value=round(100 * results[split][f"overall_{metric}"], 2),
        )
        for split in ("test", "validation")
        for metric in ("precision", "recall", "f1")
    ]


def card_data(args: argparse.Namespace, results: dict[str, Any]) -> ModelCardData:
    """The card's YAML; model-index and `datasets` only with a Hub dataset id (a local path means nothing on the
    Hub)."""
    dataset_id = hub_dataset_id(args)
    return ModelCardData(
        language=["en"],
        license=LICENSE,
        library_name="transformers",
        pipeline_tag="token-classification",
        tags=["ner", "multimodal", "twitter", "acn", "custom_code"],
        datasets=[dataset_id] if dataset_id else None,
        metrics=["seqeval"],
        base_model=base_model(args),
        model_name=f"acn-{args.variant}",
        eval_results=eval_results(dataset_id, results) if dataset_id else None,
        inference=False,
    )


OPTIONAL_SETTINGS = {"reinit_top_layers", "mention_replacement", "fgm_epsilon", "rdrop_alpha"}  # shown when switched on
RECIPE_SETTINGS = (  # (flag, what the card calls it); shown when the run had it
    ("optimizer", "optimizer"),
    ("learning_rate", "learning rate"),
    ("encoder_learning_rate", "encoder learning rate"),
    ("layerwise_lr_decay", "layer-wise learning-rate decay"),
    ("lr_scheduler_type", "schedule"),
    ("num_warmup_steps", "warm-up steps"),
    ("weight_decay", "weight decay"),
    ("per_device_train_batch_size", "batch size per device"),
    ("num_train_epochs", "most epochs"),
    ("patience", "patience"),
    ("word_dropout", "word dropout"),
    ("reinit_top_layers", "top encoder layers re-initialised"),
    ("mention_replacement", "mention replacement"),
    ("fgm_epsilon", "FGM epsilon"),
    ("rdrop_alpha", "R-Drop alpha"),
    ("average_last_epochs", "last epochs averaged at most"),
)


def recipe(args: argparse.Namespace, kept: str | None = None) -> str:
    """The training settings in effect (defaults included), and which weights were kept."""
    pretrained = args.text_encoder != PAPER_TEXT_ENCODER
    parts = [
        f"{label} {getattr(args, name)}"
        for name, label in RECIPE_SETTINGS
        if hasattr(args, name)
        and (pretrained or name not in ("encoder_learning_rate", "layerwise_lr_decay"))
        and (getattr(args, name) or name not in OPTIONAL_SETTINGS)
    ]
    return ", ".join(parts) + (f"; kept: {kept}" if kept else "")


def write_model_card(
    output_dir: Path, args: argparse.Namespace, results: dict[str, Any], kept: str | None = None
) -> None:
    """Write the card as model_card.md, and as README.md, the file the Hub renders; `kept` says which weights the
    run kept (an epoch, or the mean of the last epochs)."""
    dataset_id = hub_dataset_id(args)
    encoder = base_model(args) or (None if args.text_encoder == PAPER_TEXT_ENCODER else Path(args.text_encoder).name)
    text = CARD_TEMPLATE.format(
        card_data=card_data(args, results).to_yaml(),
        variant=args.variant,
        dataset=f"[{dataset_id}](https://huggingface.co/datasets/{dataset_id})"
        if dataset_id
        else f"`{Path(args.dataset).name}`",
        seed=args.seed,
        encoder=f", on the pretrained text encoder `{encoder}`" if encoder else "",
        folder=args.hub_model_id or output_dir,
        table=table2({f"{args.variant} (test)": results["test"], f"{args.variant} (dev)": results["validation"]}),
        command=command_line(args),
        recipe=recipe(args, kept),
    )
    card = ModelCard(text)
    for name in ("model_card.md", "README.md"):
        with atomic_path(output_dir / name) as temporary:
            card.save(temporary)
