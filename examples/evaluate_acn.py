r"""Score a saved ACN model folder or Hub id on a corpus split, in the paper's Table 2 layout.

    python examples/evaluate_acn.py --model_name_or_path OUT --dataset_name DATA [--split test] [--output_dir EVAL]
    python examples/evaluate_acn.py --model_name_or_path OUT --validation_file dev.json --test_file test.json \
        [--output_dir EVAL] [--trust_remote_code]

The flags are those of transformers' run_ner.py: a corpus folder or Hub id (--dataset_name; --split picks the split,
test by default), or split files in acn-train's formats (--validation_file, --test_file: each one given is scored as
its split). The model is loaded with the installed acn-mner classes; a folder's own code runs only with
--trust_remote_code. The names of 0.1.0 (--model, --dataset, --batch_size) still work, with a warning.
"""

import argparse
from pathlib import Path

from accelerate import Accelerator
from datasets import Dataset, DatasetDict
from torch.utils.data import DataLoader

from acn_mner.command_line import (
    ArgumentParser,
    adopt_deprecated_flags,
    existing_file,
    existing_folder,
    folder_or_hub_id,
    one_line_errors,
)
from acn_mner.data import (
    LABEL_COLUMN,
    SPLITS,
    TEXT_COLUMN,
    image_source,
    load_corpus,
    load_corpus_files,
    model_rows,
    standard_corpus,
)
from acn_mner.evaluation import gold_tags, load_metric, predict_split, score, table2, write_json, write_predictions
from modeling_acn import AcnDataCollator
from modeling_acn.pipeline_acn import load_model_and_processor

FILE_FLAGS = {"validation": "validation_file", "test": "test_file"}
# Old flag -> (the run_ner flag that replaces it, the attribute both set); removed in the next release.
DEPRECATED_FLAGS = {
    "model": ("model_name_or_path", "model_name_or_path"),
    "dataset": ("dataset_name", "dataset_name"),
    "batch_size": ("per_device_eval_batch_size", "per_device_eval_batch_size"),
}


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model_name_or_path", type=folder_or_hub_id, help="Model folder written by acn-train, or its Hub id."
    )
    parser.add_argument(
        "--dataset_name",
        type=folder_or_hub_id,
        help="Corpus: raw folder (train/valid/test.txt), save_to_disk folder, Parquet folder or Hub id.",
    )
    parser.add_argument(
        "--dataset_config_name", help="Configuration of a --dataset_name Hub dataset or Parquet folder."
    )
    parser.add_argument("--validation_file", type=existing_file, help="Dev split as one file, scored as validation.")
    parser.add_argument("--test_file", type=existing_file, help="Test split as one file, scored as test.")
    parser.add_argument("--text_column_name", default=TEXT_COLUMN, help="Column of a table corpus holding the words.")
    parser.add_argument("--label_column_name", default=LABEL_COLUMN, help="Column of a table corpus holding the tags.")
    parser.add_argument(
        "--image_dir", type=existing_folder, help="Images <id>.jpg of a raw corpus folder or Twitter-format files."
    )
    parser.add_argument("--split", choices=SPLITS, help="Split of --dataset_name to score (default test).")
    parser.add_argument(
        "--per_device_eval_batch_size", type=int, default=None, help="Tweets per batch and process (default 64)."
    )
    parser.add_argument("--output_dir", help="Where to write results and predictions; omit to only print.")
    parser.add_argument(
        "--trust_remote_code",
        action="store_true",
        help="Run the model folder's own Python code; without it the installed acn-mner classes load the weights.",
    )
    deprecated = parser.add_argument_group("deprecated (removed in the next release; each logs a warning)")
    deprecated.add_argument(
        "--model",
        dest="deprecated_model",
        metavar="MODEL",
        type=folder_or_hub_id,
        help="Use --model_name_or_path (same meaning).",
    )
    deprecated.add_argument(
        "--dataset",
        dest="deprecated_dataset",
        metavar="DATASET",
        type=folder_or_hub_id,
        help="Use --dataset_name (same meaning).",
    )
    deprecated.add_argument(
        "--batch_size",
        dest="deprecated_batch_size",
        metavar="BATCH_SIZE",
        type=int,
        help="Use --per_device_eval_batch_size (same meaning).",
    )
    args = parser.parse_args(argv)
    adopt_deprecated_flags(parser, args, DEPRECATED_FLAGS)
    check_args(parser, args)
    return args


def check_args(parser, args):
    """A model, and one corpus: --dataset_name (with --split), or split files."""
    if args.model_name_or_path is None:
        parser.error("the following arguments are required: --model_name_or_path")
    files = [f"--{flag}" for flag in FILE_FLAGS.values() if getattr(args, flag) is not None]
    if args.dataset_name is not None and files:
        parser.error(f"--dataset_name and {files[0]} both name a corpus: give one of them")
    if args.dataset_name is None and not files:
        parser.error("no corpus: give --dataset_name (a folder or Hub id), or --validation_file and/or --test_file")
    if files and args.split is not None:
        parser.error(f"--split picks a split of --dataset_name; {files[0]} is scored as its own split")
    if args.dataset_config_name is not None and args.dataset_name is None:
        parser.error("--dataset_config_name selects a configuration of --dataset_name, which is not given")
    args.per_device_eval_batch_size = args.per_device_eval_batch_size or 64
    if args.per_device_eval_batch_size < 1:
        parser.error(f"--per_device_eval_batch_size must be positive, got {args.per_device_eval_batch_size}")


def load_splits(args, model_labels):
    """Split name -> the split to score, with words in `tokens` and tags in `ner_tags` (as acn-train reads them)."""
    columns = (args.text_column_name, args.label_column_name)
    if args.dataset_name is not None:
        split = args.split or "test"
        corpus = load_corpus(args.dataset_name, args.image_dir, args.dataset_config_name)
        if split not in corpus:
            raise ValueError(f"--dataset_name {args.dataset_name} has no {split} split (its splits: {sorted(corpus)})")
        sources = {split: (corpus[split], f"the {split} split of {args.dataset_name}")}
    else:
        sources = {
            split: (load_corpus_files({"train": path}, args.image_dir, columns)["train"], f"--{flag} {path}")
            for split, flag in FILE_FLAGS.items()
            if (path := getattr(args, flag)) is not None
        }
    splits = {}
    for split, (rows, origin) in sources.items():
        # standard_corpus shapes a train/validation/test corpus: the split stands for all three
        shaped = standard_corpus(
            DatasetDict(dict.fromkeys(SPLITS, rows)), dict.fromkeys(SPLITS, origin), *columns, model_labels
        )
        splits[split] = check_labels(shaped["test"], model_labels, origin)
    return splits


def check_labels(split: Dataset, model_labels, origin):
    """Scores compare tag names, so the corpus may order its tags otherwise; a tag the model lacks is refused."""
    unknown = [name for name in split.features["ner_tags"].feature.names if name not in model_labels]
    if unknown:
        raise ValueError(f"{origin}: tags {', '.join(unknown)} are not the model's ({', '.join(model_labels)})")
    return split


def main(argv=None):
    args = parse_args(argv)
    accelerator = Accelerator()
    model, processor = load_model_and_processor(args.model_name_or_path, args.trust_remote_code)
    model_labels = [model.config.id2label[index] for index in range(model.config.num_labels)]
    splits = load_splits(args, model_labels)
    use_image = model.config.use_image
    model = accelerator.prepare(model)
    metric = load_metric()
    results = {}
    for name, split in splits.items():
        source = image_source(split, use_image)
        loader = DataLoader(
            model_rows(split, source),
            batch_size=args.per_device_eval_batch_size,
            collate_fn=AcnDataCollator(processor, source),
        )
        predictions = predict_split(accelerator, model, accelerator.prepare(loader))
        results[name] = score(metric, predictions, gold_tags(split))
        if accelerator.is_main_process:
            report(args, name, split, results[name], predictions)
    return results


def report(args, name, split, results, predictions):
    print(table2({f"{Path(args.model_name_or_path).name} ({name})": results}))
    print(
        f"{name}: {results['num_gold_entities']} gold entities (lenient), "
        f"{results['strict_num_gold_entities']} (strict)"
    )
    if args.output_dir:
        output_dir = Path(args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json(output_dir / f"{name}_results.json", results)
        write_predictions(output_dir / f"{name}_predictions.txt", split["tokens"], gold_tags(split), predictions)


if __name__ == "__main__":
    one_line_errors(main)()
