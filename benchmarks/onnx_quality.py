"""Entity F1 of a trained model through ONNX Runtime (float32 and int8) beside eager torch, on dev and test.

    python benchmarks/onnx_quality.py --model outputs/q26_base/minilm-full/seed_1 \
        --dataset ../shared/data/twitter2015 [--int8_variants] --output outputs/benchmarks/onnx_quality.json

The model folder is exported with `acn-export --int8` into a temporary folder, and each pipeline tags every tweet of
the dev and test splits (words as given, `is_split_into_words=True`, batch 32, constrained BIO decoding, as
`acn-predict` tags): `AcnPipeline` in eager torch, and the exported folder with `backend="onnxruntime"` on
`model.onnx` and on `model_int8.onnx`. With `--int8_variants`, also int8 graphs quantised other ways (per-tensor
weights, the encoder's feed-forward outputs or the head kept float32), the study behind `quantize_int8`'s default:
choose on dev, report test. Prints lenient entity F1 per type and overall and the share of words whose tag equals
eager's; writes every figure to `--output`. A corpus without images is tagged text only.

    python benchmarks/onnx_quality.py --summarise outputs/benchmarks/onnx_quality_seed1.json \
        outputs/benchmarks/onnx_quality_seed2.json outputs/benchmarks/onnx_quality_seed3.json

prints, from the reports of several models (e.g. the seeds of a recipe), each graph's F1 minus eager's on dev and
test, the mean over the models with each model's in brackets, and the mean share of words tagged as eager tags them.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import onnx
import torch

from acn_mner.benchmarking import agreement, print_table, write_json
from acn_mner.cpu import cpu_capabilities
from acn_mner.data import load_corpus
from acn_mner.evaluation import entity_types, gold_tags, load_metric, score
from acn_mner.onnx_export import (
    ENCODER_PREFIX,
    export_onnx,
    feed_forward_outputs,
    float32_products,
    product_scopes,
    quantize_int8,
)
from modeling_acn import AcnPipeline
from modeling_acn.onnx_runtime_acn import ONNX_FILE, ONNX_INT8_FILE, AcnOnnxModel
from modeling_acn.pipeline_acn import load_processor

BATCH_SIZE = 32
SPLITS = ("validation", "test")
EAGER = "eager torch (float32)"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="A trained model folder (train_acn.py's output_dir).")
    parser.add_argument("--dataset", help="Corpus folder (the raw Twitter-2015 layout or any load_corpus source).")
    parser.add_argument(
        "--int8_variants", action="store_true", help="Also score int8 graphs quantised other ways than acn-export's."
    )
    parser.add_argument("--output", default="outputs/benchmarks/onnx_quality.json", help="JSON file for every figure.")
    parser.add_argument(
        "--summarise",
        nargs="+",
        metavar="REPORT",
        help="Only print the mean over these JSON reports of earlier runs (one per model) and exit.",
    )
    args = parser.parse_args(argv)
    if not args.summarise and not (args.model and args.dataset):
        parser.error("--model and --dataset are required (or --summarise with earlier reports)")
    return args


def int8_variants(graph) -> dict[str, dict]:
    """Other quantisations than `acn-export --int8`'s (every product int8, per-channel weights): `quantize_int8`
    arguments by name. Products with a vector weight stay float32 wherever weights are per channel."""
    vectors = float32_products(graph)
    feed_forward = feed_forward_outputs(graph)
    head = [
        name
        for name, scope in product_scopes(graph).items()
        if not name.startswith(ENCODER_PREFIX) and "subword_encoder" not in scope
    ]
    return {
        "every product int8, per-tensor weights": {"float32_nodes": [], "per_channel": False},
        "encoder feed-forward outputs float32 (earlier exports)": {"float32_nodes": feed_forward, "per_channel": False},
        "encoder feed-forward outputs float32, per-channel weights": {"float32_nodes": feed_forward + vectors},
        "head float32 too, per-channel weights": {"float32_nodes": sorted(set(head + vectors))},
    }


def tag(pipe: AcnPipeline, tokens: list[list[str]]) -> tuple[list[list[str]], float]:
    """Every tweet's tags and the seconds it took."""
    started = time.perf_counter()
    results = pipe(tokens, is_split_into_words=True, batch_size=BATCH_SIZE, return_tags=True)
    return [result["tags"] for result in results], time.perf_counter() - started


def main(argv=None):
    args = parse_args(argv)
    if args.summarise:
        reports = {path: json.loads(Path(path).read_text()) for path in args.summarise}
        eager, rows = summarise(reports)
        print(eager)
        print_table(f"F1 minus eager's, mean of {len(reports)} models (each model's)", rows, name_header="pipeline")
        return
    corpus = load_corpus(args.dataset)
    tokens = {split: [list(words) for words in corpus[split]["tokens"]] for split in SPLITS}
    gold = {split: gold_tags(corpus[split]) for split in SPLITS}
    metric = load_metric()
    results, tags = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        onnx_folder = Path(folder) / "onnx"
        export_onnx(args.model, onnx_folder, int8=True)
        processor = load_processor(onnx_folder)
        graphs = {"ONNX Runtime float32": ONNX_FILE, "ONNX Runtime int8 (acn-export --int8)": ONNX_INT8_FILE}
        if args.int8_variants:
            for number, (name, arguments) in enumerate(
                int8_variants(onnx.load(str(onnx_folder / ONNX_FILE)).graph).items()
            ):
                quantize_int8(onnx_folder / ONNX_FILE, onnx_folder / f"variant_{number}.onnx", **arguments)
                graphs[f"ONNX Runtime int8, {name}"] = f"variant_{number}.onnx"
        pipelines = {EAGER: lambda: AcnPipeline.from_pretrained(args.model, device="cpu")}
        for name, graph in graphs.items():
            pipelines[name] = lambda graph=graph: AcnPipeline(
                model=AcnOnnxModel(onnx_folder, graph), processor=processor, device="cpu"
            )
        for name, load in pipelines.items():
            pipe, results[name], tags[name] = load(), {}, {}
            for split in SPLITS:
                tags[name][split], seconds = tag(pipe, tokens[split])
                results[name][split] = {**score(metric, tags[name][split], gold[split]), "seconds": seconds}
                results[name][split]["tags_as_eager"] = agreement(tags[name][split], tags[EAGER][split])
            dev_f1, test_f1 = (100 * results[name][split]["overall_f1"] for split in SPLITS)
            print(f"{name}: dev F1 {dev_f1:.2f}, test F1 {test_f1:.2f}", flush=True)
    print_table("Lenient entity F1 in percent", table_rows(results), name_header="pipeline")
    machine = {"threads": torch.get_num_threads(), "torch": torch.__version__, "cpu": cpu_capabilities()}
    output = {"model": str(args.model), "dataset": str(args.dataset), "machine": machine, "results": results}
    write_json(args.output, output)
    print(f"wrote {args.output}")


def summarise(reports: dict[str, dict]) -> tuple[str, dict[str, dict[str, str]]]:
    """Over several models' reports (by file name): eager's dev and test F1, and per graph scored in every report
    its dev and test F1 minus eager's and its share of words tagged as eager tags them, each the mean over the models,
    the F1 differences followed by every model's in brackets."""
    for path, report in reports.items():
        if EAGER not in report.get("results", {}):
            raise ValueError(f"{path}: not a report of this script (no {EAGER!r} results)")
    results = [report["results"] for report in reports.values()]
    names = [name for name in results[0] if name != EAGER and all(name in result for result in results)]

    def f1(result: dict, split: str) -> float:
        return 100 * result[split]["overall_f1"]

    def mean_of(values: list[float], sign: str = "") -> str:
        return f"{sum(values) / len(values):{sign}.2f} ({', '.join(f'{value:{sign}.2f}' for value in values)})"

    eager = ", ".join(
        f"{label} F1 {mean_of([f1(result[EAGER], split) for result in results])}"
        for split, label in zip(SPLITS, ("dev", "test"), strict=True)
    )
    rows = {}
    for name in names:
        cells = {}
        for split, label in zip(SPLITS, ("dev", "test"), strict=True):
            deltas = [f1(result[name], split) - f1(result[EAGER], split) for result in results]
            shares = [result[name][split]["tags_as_eager"] for result in results]
            cells[f"{label} F1 - eager"] = mean_of(deltas, "+")
            cells[f"{label} tags as eager"] = f"{sum(shares) / len(shares):.2%}"
        rows[name] = cells
    return f"{EAGER}: {eager}", rows


def table_rows(results) -> dict[str, dict[str, str]]:
    """Each pipeline's cells: dev and test F1, test F1 against eager's, test F1 per type, agreement, seconds."""
    types = entity_types(results[EAGER]["test"])
    eager_f1 = results[EAGER]["test"]["overall_f1"]
    rows = {}
    for name, result in results.items():
        dev, test = result["validation"], result["test"]
        rows[name] = {
            "dev F1": f"{100 * dev['overall_f1']:.2f}",
            "test F1": f"{100 * test['overall_f1']:.2f}",
            "test F1 - eager": f"{100 * (test['overall_f1'] - eager_f1):+.2f}",
            **{f"test {kind}": f"{100 * test[kind]['f1']:.2f}" for kind in types},
            "test tags as eager": f"{test['tags_as_eager']:.2%}",
            "test s": f"{test['seconds']:.1f}",
        }
    return rows


if __name__ == "__main__":
    main()
