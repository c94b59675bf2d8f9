"""acn-predict with the ONNX Runtime int8 graph on a large file, against the pipeline called on the same tweets.

    python benchmarks/predict_onnx.py --models_dir outputs/serve_models [--rows 8192] [--workers 0 1]
        [--corpus "synthetic, ~40 words"] [--output outputs/benchmarks/predict_onnx.json]

The model is `benchmarks/serve.py`'s int8 export of ACN on MiniLM-L6 (`--models_dir` as there: it must hold the
`acn-onnx` folder that serve.py builds). The input is a JSONL file of `--rows` rows, `{"id", "text"}`, the
Twitter-2015 test texts repeated (`--corpus`: one of serve.py's corpora instead; serve.py's first when the
Twitter-2015 file is absent). Each configuration runs in a fresh
process, one thread for torch and ONNX Runtime, timed from start to exit: `acn-predict --backend onnxruntime
--onnx_file model_int8.onnx --batch_size 32 --num_workers N` on the whole file and on its first 32 rows, whose
difference is the tagging of the rest (loading, the first batch and the output's rename cancel out), as tweets/s;
beside them `AcnPipeline.from_pretrained(..., backend="onnxruntime")` on the same texts in one call
(`batch_size=32`), the offline mode of serve.py. Prints a table and writes the figures as JSON.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from acn_mner.benchmarking import markdown_table, thread_environment, write_json
from acn_mner.corpus import read_split_file
from acn_mner.cpu import cpu_capabilities

ROOT = Path(__file__).resolve().parents[1]
TWITTER2015_TEST = ROOT.parent / "shared" / "data" / "twitter2015" / "test.txt"
BATCH_SIZE = 32
ONNX_FILE = "model_int8.onnx"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models_dir", default="outputs/serve_models", help="serve.py's --models_dir.")
    parser.add_argument("--rows", type=int, default=8192, help="Rows of the input file.")
    parser.add_argument(
        "--corpus",
        help="The texts: a corpus of serve.py's (its name in --models_dir's corpora.json). Default: the Twitter-2015 "
        "test texts, else serve.py's first corpus.",
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="acn-predict --num_workers values.")
    parser.add_argument("--output", default="outputs/benchmarks/predict_onnx.json", help="JSON file for the figures.")
    parser.add_argument("--pipeline", help=argparse.SUPPRESS)  # the pipeline's run on this input (internal)
    args = parser.parse_args(argv)
    if args.rows <= BATCH_SIZE:
        raise SystemExit(f"--rows must be more than {BATCH_SIZE}, got {args.rows}")
    return args


def texts_of(models_dir: Path, corpus: str | None) -> tuple[str, list[str]]:
    """The corpus's name and texts: `corpus` of serve.py's, else the Twitter-2015 test texts, else serve.py's first."""
    if corpus is None and TWITTER2015_TEST.is_file():
        return "Twitter-2015 test", [" ".join(tweet.tokens) for tweet in read_split_file(TWITTER2015_TEST)]
    corpora = json.loads((models_dir / "corpora.json").read_text())  # serve.py's
    if corpus is None:
        return next(iter(corpora.items()))
    if corpus not in corpora:
        raise SystemExit(f"--corpus {corpus!r} is not in {models_dir / 'corpora.json'}: choose one of {list(corpora)}")
    return corpus, corpora[corpus]


def write_rows(path: Path, texts: list[str], rows: int) -> Path:
    with path.open("w", encoding="utf-8") as file:
        for index in range(rows):
            file.write(json.dumps({"id": f"t{index}", "text": texts[index % len(texts)]}) + "\n")
    return path


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=thread_environment(1), capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def predict_command(folder: Path, source: Path, output: Path, workers: int) -> list[str]:
    command = [sys.executable, "-m", "acn_mner.predict", "--model", str(folder), "--backend", "onnxruntime"]
    command += ["--onnx_file", ONNX_FILE, "--input", str(source), "--output", str(output)]
    return command + ["--batch_size", str(BATCH_SIZE), "--num_workers", str(workers), "--device", "cpu"]


def run_pipeline(folder: Path, source: Path) -> None:
    """In its own process: the pipeline on the file's texts in one call; prints the seconds of that call."""
    from modeling_acn import AcnPipeline

    texts = [json.loads(line)["text"] for line in source.read_text(encoding="utf-8").splitlines()]
    pipe = AcnPipeline.from_pretrained(folder, backend="onnxruntime", onnx_file=ONNX_FILE)
    pipe(texts[:BATCH_SIZE], batch_size=BATCH_SIZE)  # warm-up, as serve.py
    started = time.perf_counter()
    pipe(texts, batch_size=BATCH_SIZE)
    print(json.dumps({"seconds": time.perf_counter() - started}))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    folder = Path(args.models_dir) / "acn-onnx"
    if args.pipeline:
        run_pipeline(folder, Path(args.pipeline))
        return
    if not (folder / ONNX_FILE).is_file():
        raise SystemExit(f"{folder / ONNX_FILE} is missing: run benchmarks/serve.py --models_dir {args.models_dir}")
    capabilities = cpu_capabilities()
    print(f"CPU: {json.dumps(capabilities)}", flush=True)
    corpus, texts = texts_of(Path(args.models_dir), args.corpus)
    rows: dict[str, dict[str, str]] = {}
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        whole = write_rows(Path(scratch) / "rows.jsonl", texts, args.rows)
        first = write_rows(Path(scratch) / "first.jsonl", texts, BATCH_SIZE)
        for workers in args.workers:
            seconds = timed(predict_command(folder, whole, Path(scratch) / f"out{workers}.jsonl", workers))
            start = timed(predict_command(folder, first, Path(scratch) / f"first{workers}.jsonl", workers))
            if seconds <= start:  # the rest of the file took no measurable time: the rate would be noise
                raise SystemExit(
                    f"acn-predict took {seconds:.2f} s on {args.rows} rows and {start:.2f} s on {BATCH_SIZE}: "
                    "too few rows to time the rest, use more --rows"
                )
            figures[f"acn-predict, --num_workers {workers}"] = (args.rows - BATCH_SIZE) / (seconds - start)
            rows[f"acn-predict --backend onnxruntime, --num_workers {workers}"] = {
                "seconds (whole file)": f"{seconds:.1f}",
                f"seconds ({BATCH_SIZE} rows)": f"{start:.1f}",
            }
        command = [sys.executable, __file__, "--models_dir", args.models_dir, "--pipeline", str(whole)]
        command += ["--rows", str(args.rows)]
        done = subprocess.run(command, env=thread_environment(1), capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"the pipeline's run failed:\n{done.stderr[-3000:]}")
        seconds = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
        figures["AcnPipeline, one call"] = args.rows / seconds
        rows["AcnPipeline(texts, batch_size=32), backend onnxruntime"] = {"seconds (whole file)": f"{seconds:.1f}"}
    reference = figures["AcnPipeline, one call"]
    for cells, speed in zip(rows.values(), figures.values(), strict=True):
        cells["tweets/s"] = f"{speed:.1f}"
        cells["÷ pipeline"] = f"{speed / reference:.2f}x"
    table = markdown_table(rows, name_header=f"{args.rows} {corpus} texts, int8, one thread")
    print("\n" + table, flush=True)
    report = {"cpu": capabilities, "corpus": corpus, "rows": args.rows, "tweets_per_s": figures, "markdown": table}
    write_json(args.output, report)
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
