"""Entity F1 of a trained model through ONNX Runtime (float32 and int8) beside eager torch, on one split.

    python benchmarks/onnx_quality.py --model outputs/q26_base/minilm-full/seed_1 \
        --dataset ../shared/data/twitter2015 --output outputs/benchmarks/onnx_quality.json

The model folder is exported with `acn-export --int8` into a temporary folder, and the three pipelines tag every
tweet of the split (words as given, `is_split_into_words=True`, batch 32, constrained BIO decoding, as `acn-predict`
tags): `AcnPipeline` in eager torch, and the exported folder with `backend="onnxruntime"` on `model.onnx` and on
`model_int8.onnx`. Prints the paper's Table 2 layout (lenient entity scores per type and overall) and the share of
words whose tag equals eager's; writes every figure to `--output`. Images: a corpus without them tags text only.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from acn_mner.atomic import write_text
from acn_mner.cpu import cpu_capabilities
from acn_mner.data import load_corpus
from acn_mner.evaluation import gold_tags, load_metric, score, table2
from acn_mner.onnx_export import export_onnx
from modeling_acn import AcnPipeline
from modeling_acn.onnx_acn import ONNX_FILE, ONNX_INT8_FILE

BATCH_SIZE = 32


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="A trained model folder (train_acn.py's output_dir).")
    parser.add_argument("--dataset", required=True, help="Corpus folder (the raw Twitter-2015 layout or any load_corpus source).")
    parser.add_argument("--split", default="test", choices=["train", "validation", "test"], help="Split to score.")
    parser.add_argument("--output", default="outputs/benchmarks/onnx_quality.json", help="JSON file for every figure.")
    return parser.parse_args(argv)


def tag_split(pipe: AcnPipeline, tokens: list[list[str]]) -> tuple[list[list[str]], float]:
    """Every tweet's tags and the seconds it took."""
    started = time.perf_counter()
    results = pipe(tokens, is_split_into_words=True, batch_size=BATCH_SIZE, return_tags=True)
    return [result["tags"] for result in results], time.perf_counter() - started


def agreement(tags, reference) -> float:
    pairs = [(a, b) for tweet, expected in zip(tags, reference) for a, b in zip(tweet, expected, strict=True)]
    return sum(a == b for a, b in pairs) / len(pairs)


def main(argv=None):
    args = parse_args(argv)
    split = load_corpus(args.dataset)[args.split]
    tokens, gold = [list(words) for words in split["tokens"]], gold_tags(split)
    metric = load_metric()
    with tempfile.TemporaryDirectory() as folder:
        export_onnx(args.model, Path(folder) / "onnx", int8=True)
        pipelines = {
            "eager torch (float32)": lambda: AcnPipeline.from_pretrained(args.model, device="cpu"),
            "ONNX Runtime float32": lambda: AcnPipeline.from_pretrained(Path(folder) / "onnx", backend="onnxruntime", onnx_file=ONNX_FILE),
            "ONNX Runtime int8": lambda: AcnPipeline.from_pretrained(Path(folder) / "onnx", backend="onnxruntime", onnx_file=ONNX_INT8_FILE),
        }
        tags, seconds = {}, {}
        for name, load in pipelines.items():
            tags[name], seconds[name] = tag_split(load(), tokens)
            print(f"{name}: {len(tokens)} tweets in {seconds[name]:.1f} s", flush=True)
    reference = next(iter(tags))
    results = {
        name: {**score(metric, predicted, gold), "tags_as_eager": agreement(predicted, tags[reference]), "seconds": seconds[name]}
        for name, predicted in tags.items()
    }
    print(table2({f"{name} ({args.split})": result for name, result in results.items()}))
    for name, result in results.items():
        delta = 100 * (result["overall_f1"] - results[reference]["overall_f1"])
        print(f"{name}: F1 {100 * result['overall_f1']:.2f} ({delta:+.2f} against eager), tags as eager {result['tags_as_eager']:.2%}")
    machine = {"threads": torch.get_num_threads(), "torch": torch.__version__, "cpu": cpu_capabilities()}
    output = {"model": str(args.model), "dataset": str(args.dataset), "split": args.split, "machine": machine, "results": results}
    write_text(args.output, json.dumps(output, indent=2, default=float) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
