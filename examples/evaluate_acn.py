"""Score a saved ACN model folder or Hub id on one split of a corpus, in the paper's Table 2 layout.

    python examples/evaluate_acn.py --model OUT --dataset DATA [--split test] [--output_dir EVAL] [--trust_remote_code]

The model is loaded with the installed acn-mner classes; a folder's own code runs only with --trust_remote_code.
"""

import argparse
from pathlib import Path

from accelerate import Accelerator
from torch.utils.data import DataLoader

from acn_mner.data import image_source, load_corpus, model_rows
from acn_mner.evaluation import gold_tags, load_metric, predict_split, score, table2, write_json, write_predictions
from modeling_acn import AcnDataCollator
from modeling_acn.pipeline_acn import load_model_and_processor


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="Model folder written by train_acn.py, or a Hub id.")
    parser.add_argument(
        "--dataset", required=True, help="Corpus: raw folder, save_to_disk folder, Parquet folder or Hub id."
    )
    parser.add_argument("--image_dir", default=None, help="Images of a raw corpus folder.")
    parser.add_argument("--split", default="test", choices=["train", "validation", "test"], help="Split to score.")
    parser.add_argument("--batch_size", type=int, default=64, help="Tweets per batch and process.")
    parser.add_argument(
        "--output_dir", default=None, help="Where to write results and predictions; omit to only print."
    )
    parser.add_argument(
        "--trust_remote_code",
        action="store_true",
        help="Run the model folder's own Python code; without it the installed acn-mner classes load the weights.",
    )
    return parser.parse_args(argv)


def check_labels(model, split):
    """The corpus must use the model's tag set, in the model's id order."""
    names = split.features["ner_tags"].feature.names
    expected = [model.config.id2label[index] for index in range(model.config.num_labels)]
    if names != expected:
        raise ValueError(f"the corpus's tags {names} differ from the model's {expected}")


def main(argv=None):
    args = parse_args(argv)
    accelerator = Accelerator()
    model, processor = load_model_and_processor(args.model, args.trust_remote_code)
    split = load_corpus(args.dataset, args.image_dir)[args.split]
    check_labels(model, split)
    source = image_source(split, model.config.use_image)
    loader = DataLoader(
        model_rows(split, source), batch_size=args.batch_size, collate_fn=AcnDataCollator(processor, source)
    )
    loader = accelerator.prepare(loader)
    model = accelerator.prepare(model)
    predictions = predict_split(accelerator, model, loader)
    results = score(load_metric(), predictions, gold_tags(split))
    if accelerator.is_main_process:
        print(table2({f"{Path(args.model).name} ({args.split})": results}))
        print(
            f"{args.split}: {results['num_gold_entities']} gold entities (lenient), "
            f"{results['strict_num_gold_entities']} (strict)"
        )
        if args.output_dir:
            output_dir = Path(args.output_dir)
            output_dir.mkdir(parents=True, exist_ok=True)
            write_json(output_dir / f"{args.split}_results.json", results)
            write_predictions(
                output_dir / f"{args.split}_predictions.txt", split["tokens"], gold_tags(split), predictions
            )
    return results


if __name__ == "__main__":
    main()
