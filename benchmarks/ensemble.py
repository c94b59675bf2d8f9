"""A seed ensemble of trained ACN models: their CRF emissions averaged per word, against each model alone.

    python benchmarks/ensemble.py --models outputs/q26_base/minilm-full/seed_1 outputs/q26_base/minilm-full/seed_2 \
        outputs/q26_base/minilm-full/seed_3 --dataset ../shared/data/twitter2015 \
        --output outputs/benchmarks/ensemble.json

The models must share labels and vocabularies (the same corpus and settings, other seeds). Every tweet of dev and
test goes through each model (eager, batch 64, text only where the corpus has no images); the ensemble averages the
models' emissions and their CRF scores (start, end and transition) and decodes with the BIO-constrained Viterbi the
pipeline uses. Prints dev and test entity F1 per type and overall for each model and for the ensemble, and the
ensemble's cost: its weights and its tagging time against one model's.
"""

import argparse
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from acn_mner.benchmarking import print_table, write_json
from acn_mner.cpu import cpu_capabilities
from acn_mner.data import image_source, load_corpus, model_rows
from acn_mner.evaluation import entity_types, gold_tags, load_metric, score
from modeling_acn import AcnDataCollator, AcnForTokenClassification, AcnProcessor
from modeling_acn.modeling_acn import bio_transition_table, viterbi_decode

SPLITS = ("validation", "test")
CRF_SCORES = ("transitions", "start_transitions", "end_transitions")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models",
        nargs="+",
        required=True,
        help="Trained model folders (two or more) of the same corpus and settings.",
    )
    parser.add_argument(
        "--dataset", required=True, help="Corpus folder (the raw Twitter-2015 layout or any load_corpus source)."
    )
    parser.add_argument("--batch_size", type=int, default=64, help="Tweets per forward pass.")
    parser.add_argument("--output", default="outputs/benchmarks/ensemble.json", help="JSON file for every figure.")
    return parser.parse_args(argv)


def check_same_inputs(folders, processors, models) -> None:
    """Members must read the same inputs the same way and name the same tags: one processor then serves them all."""
    first = processors[0].tokenizer
    for folder, processor, model in zip(folders[1:], processors[1:], models[1:], strict=True):
        if (
            processor.tokenizer.get_vocab() != first.get_vocab()
            or processor.tokenizer.get_char_vocab() != first.get_char_vocab()
        ):
            raise ValueError(f"{folder} has other vocabularies than {folders[0]}: an ensemble needs one processor")
        if model.config.id2label != models[0].config.id2label:
            raise ValueError(
                f"{folder} names other tags ({model.config.id2label}) than {folders[0]} ({models[0].config.id2label})"
            )
        if model.crf is None:
            raise ValueError(f"{folder} has no CRF: the ensemble averages CRF scores")


def split_emissions(models, processor, split, batch_size) -> tuple[list, list, list]:
    """Per batch, each model's emissions `(batch, seq_len, tags)` and the word mask; and each model's seconds."""
    source = image_source(split, models[0].config.use_image)
    loader = DataLoader(model_rows(split, source), batch_size=batch_size, collate_fn=AcnDataCollator(processor, source))
    emissions, masks, seconds = [], [], [0.0] * len(models)
    for batch in loader:
        batch.pop("labels", None)
        outputs = []
        for index, model in enumerate(models):
            started = time.perf_counter()
            with torch.no_grad():
                outputs.append(model(**batch).logits.float())  # (batch, seq_len, tags)
            seconds[index] += time.perf_counter() - started
        emissions.append(outputs)
        masks.append(batch["attention_mask"].bool())  # (batch, seq_len)
    return emissions, masks, seconds


def decode(emissions, mask, crf_scores, allowed) -> list[list[int]]:
    paths = viterbi_decode(emissions, mask, *crf_scores, *allowed)  # (batch, seq_len)
    return [path[:length].tolist() for path, length in zip(paths, mask.sum(-1).tolist(), strict=True)]


def main(argv=None):
    args = parse_args(argv)
    if len(args.models) < 2:
        raise SystemExit(f"ensemble.py: error: an ensemble needs two or more --models, got {len(args.models)}")
    models = [AcnForTokenClassification.from_pretrained(folder).eval() for folder in args.models]
    processors = [AcnProcessor.from_pretrained(folder) for folder in args.models]
    check_same_inputs(args.models, processors, models)
    id2label = models[0].config.id2label
    allowed = bio_transition_table(id2label)
    member_scores = [tuple(getattr(model.crf, name).detach().float() for name in CRF_SCORES) for model in models]
    ensemble_scores = tuple(torch.stack(tables).mean(0) for tables in zip(*member_scores, strict=True))
    names = [Path(folder).name for folder in args.models]
    corpus, metric = load_corpus(args.dataset), load_metric()
    results, seconds = {name: {} for name in [*names, "ensemble"]}, {}
    for split in SPLITS:
        emissions, masks, seconds[split] = split_emissions(models, processors[0], corpus[split], args.batch_size)
        gold = gold_tags(corpus[split])
        for index, name in enumerate(names):
            tags = [
                tag
                for outputs, mask in zip(emissions, masks, strict=True)
                for tag in decode(outputs[index], mask, member_scores[index], allowed)
            ]
            results[name][split] = score(metric, [[id2label[tag] for tag in tweet] for tweet in tags], gold)
        averaged = [torch.stack(outputs).mean(0) for outputs in emissions]  # (batch, seq_len, tags) per batch
        tags = [
            tag
            for outputs, mask in zip(averaged, masks, strict=True)
            for tag in decode(outputs, mask, ensemble_scores, allowed)
        ]
        results["ensemble"][split] = score(metric, [[id2label[tag] for tag in tweet] for tweet in tags], gold)
    types = entity_types(results["ensemble"]["test"])
    rows = {
        name: {
            "dev F1": f"{100 * result['validation']['overall_f1']:.2f}",
            "test F1": f"{100 * result['test']['overall_f1']:.2f}",
            **{f"test {kind}": f"{100 * result['test'][kind]['f1']:.2f}" for kind in types},
        }
        for name, result in results.items()
    }
    print_table("Lenient entity F1 in percent", rows, name_header="model")
    members = [(results[name]["test"]["overall_f1"], results[name]["validation"]["overall_f1"]) for name in names]
    mean_test, mean_dev = (100 * sum(values) / len(values) for values in zip(*members, strict=True))
    # the frozen image trunk (the same published weights in every member) is shared; the rest is per member
    parameters = sum(
        parameter.numel() for name, parameter in models[0].named_parameters() if not name.startswith("acn.vision.")
    )
    one_model = sum(seconds["test"]) / len(models)
    cost = {
        "models": len(models),
        "parameters_per_model": parameters,
        "parameters": parameters * len(models),
        "test_seconds_one_model": one_model,
        "test_seconds_ensemble": sum(seconds["test"]),
    }
    ensemble_dev, ensemble_test = (100 * results["ensemble"][split]["overall_f1"] for split in SPLITS)
    print(
        f"members' mean: dev {mean_dev:.2f}, test {mean_test:.2f}; ensemble: dev {ensemble_dev:.2f}, "
        f"test {ensemble_test:.2f}"
    )
    print(
        f"cost: {len(models)} x {parameters / 1e6:.1f}M parameters (besides a shared image trunk); the test split's "
        f"forward passes take {sum(seconds['test']):.1f} s against {one_model:.1f} s for one model"
    )
    output = {
        "models": args.models,
        "machine": {"threads": torch.get_num_threads(), "cpu": cpu_capabilities()},
        "results": results,
        "cost": cost,
    }
    write_json(args.output, output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
