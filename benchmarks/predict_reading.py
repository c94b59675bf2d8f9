"""acn-predict's readers on a large JSONL or CSV input: each worker reading the whole file against byte ranges.

    python benchmarks/predict_reading.py [--sizes_mb 256 512 1024] [--formats jsonl csv] [--workers 2]
        [--batch_size 8] [--output outputs/benchmarks/predict_reading.json] [--data_dir ../shared/data/twitter2015]

Measures the readers' own work, without a model: acn-predict's `PreparedBatches` under a `DataLoader` with
`--workers` worker processes, whose preparation only counts the rows (tagging throughput, which does not depend on
how rows are read, is in docs/serving.md). Two schemes: "whole" (every worker reads and parses the whole file and
keeps every n-th batch: acn-predict before byte ranges) and "ranges" (one pass of the main process indexes where
each batch starts, then each worker reads only its batches' bytes: acn-predict now; for CSV the index pass parses
the file once). The inputs are JSONL and CSV files of the given sizes, made of Twitter-2015 tweets when the corpus
is there (else generated words), each row ``{"id", "text", "image": null}`` (CSV: columns id, text, image, the
image empty), written once under the output's folder and removed at the end. Every configuration runs in a fresh
process; per worker it reports rows, CPU seconds, bytes read (`rchar` of /proc/<pid>/io, which counts the bytes of
read calls) as a share of the file, rows/s and peak resident memory (getrusage), and the main process's peak
resident memory and index time.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

from torch.utils.data import DataLoader

from acn_mner.benchmarking import markdown_table, write_json
from acn_mner.corpus import SPLIT_FILES, read_split_file
from acn_mner.cpu import cpu_capabilities
from acn_mner.predict import PreparedBatches

ROOT = Path(__file__).resolve().parents[1]
SCHEMES = ("whole", "ranges")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes_mb", type=int, nargs="+", default=[256, 512, 1024], help="Input sizes in MiB.")
    parser.add_argument(
        "--formats", nargs="+", choices=["jsonl", "csv"], default=["jsonl"], help="Input formats to measure."
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="DataLoader worker processes (acn-predict --num_workers)."
    )
    parser.add_argument("--batch_size", type=int, default=8, help="Rows per batch (acn-predict's default).")
    parser.add_argument(
        "--data_dir", default=str(ROOT.parent / "shared" / "data" / "twitter2015"), help="Tweets to repeat."
    )
    parser.add_argument(
        "--output", default="outputs/benchmarks/predict_reading.json", help="JSON file for every figure."
    )
    parser.add_argument(
        "--run", nargs=2, metavar=("SCHEME", "INPUT"), help=argparse.SUPPRESS
    )  # one configuration, in a fresh process
    return parser.parse_args(argv)


# --- one configuration, in its own process -------------------------------------------------------------------


def read_bytes() -> int:
    """Bytes this process has read with read calls so far."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no rchar line")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RowCounter:
    """A `RowTagger` stand-in whose preparation counts rows and reports its worker's reading and memory."""

    started_bytes = 0
    started_cpu = 0.0

    def prepare(self, rows):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "pid": os.getpid(),
            "rows": len(rows),
            "bytes": read_bytes() - RowCounter.started_bytes,
            "rss": peak_rss_mib(),
            "cpu": usage.ru_utime + usage.ru_stime - RowCounter.started_cpu,
        }


def start_worker(worker_id):
    RowCounter.started_bytes = read_bytes()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    RowCounter.started_cpu = usage.ru_utime + usage.ru_stime


def run_one(scheme: str, path: Path, workers: int, batch_size: int) -> dict:
    dataset = PreparedBatches(RowCounter(), path, None, batch_size)
    started = time.perf_counter()
    workers_seen = {}
    with dataset.indexed(workers) if scheme == "ranges" else nullcontext():
        index_seconds = time.perf_counter() - started
        loader = DataLoader(
            dataset, batch_size=None, num_workers=workers, collate_fn=lambda item: item, worker_init_fn=start_worker
        )
        rows = 0
        for batch in loader:
            rows += batch["rows"]
            seen = workers_seen.setdefault(batch["pid"], {"rows": 0})
            seen.update(rows=seen["rows"] + batch["rows"], bytes=batch["bytes"], rss=batch["rss"], cpu=batch["cpu"])
    seconds = time.perf_counter() - started
    size = path.stat().st_size
    return {
        "format": path.suffix[1:],
        "scheme": scheme,
        "file_mib": size / 2**20,
        "rows": rows,
        "workers": workers,
        "seconds": seconds,
        "index_seconds": index_seconds,
        "main_peak_rss_mib": peak_rss_mib(),
        "per_worker": [
            {
                "rows": seen["rows"],
                "rows_per_second": seen["rows"] / seconds,
                "bytes_read_share": seen["bytes"] / size,
                "cpu_seconds": seen["cpu"],
                "peak_rss_mib": seen["rss"],
            }
            for seen in workers_seen.values()
        ],
    }


# --- inputs and the table ------------------------------------------------------------------------------------


def tweet_texts(data_dir: Path) -> list[str]:
    """The tweets of every split file the corpus folder has (words joined by spaces), else generated ones."""
    texts = [
        " ".join(tweet.tokens)
        for name in SPLIT_FILES.values()
        if (data_dir / name).is_file()
        for tweet in read_split_file(data_dir / name)
    ]
    if texts:
        return texts
    vocabulary = (
        "Obama visits Paris with Merkel and the @nba fans of Chicago Bulls at #Berlin http://t.co/x today".split()
    )
    return [" ".join(vocabulary[number % 7 : number % 7 + 5 + number % 9]) for number in range(1000)]


def write_input(path: Path, mib: int, texts: list[str]) -> Path:
    """A JSONL or CSV file (by `path`'s suffix) of about `mib` MiB: the tweets over and over, one row per line."""
    target, written, number = mib * 2**20, 0, 0
    with open(path, "w", encoding="utf-8", newline="") as out:
        if path.suffix == ".csv":
            out.write("id,text,image\n")
        while written < target:
            if path.suffix == ".csv":
                text = texts[number % len(texts)]
                line = f'tweet-{number},"{text.replace(chr(34), chr(34) * 2)}",\n'
            else:
                line = json.dumps({"id": f"tweet-{number}", "text": texts[number % len(texts)], "image": None}) + "\n"
            out.write(line)
            written += len(line.encode("utf-8"))
            number += 1
    return path


def table(results: list[dict]) -> str:
    """A row per configuration; the per-worker figures joined by slashes."""
    rows = {}
    for result in results:
        workers = result["per_worker"]
        name = f"{result['file_mib']:.0f} MiB {result['format']}, {result['scheme']}"
        rows[name] = {
            "rows": f"{result['rows']:,}",
            "seconds": f"{result['seconds']:.1f}",
            "index s": f"{result['index_seconds']:.1f}",
            "rows/s per worker": " / ".join(f"{worker['rows_per_second']:,.0f}" for worker in workers),
            "CPU s per worker": " / ".join(f"{worker['cpu_seconds']:.1f}" for worker in workers),
            "bytes read per worker (share of file)": " / ".join(
                f"{worker['bytes_read_share']:.2f}" for worker in workers
            ),
            "main peak RSS MiB": f"{result['main_peak_rss_mib']:.0f}",
            "worker peak RSS MiB": f"{max(worker['peak_rss_mib'] for worker in workers):.0f}",
        }
    return markdown_table(rows, name_header="input, scheme")


def main(argv=None):
    args = parse_args(argv)
    if args.run:
        print(json.dumps(run_one(args.run[0], Path(args.run[1]), args.workers, args.batch_size)))
        return
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    texts = tweet_texts(Path(args.data_dir))
    results = []
    for mib, suffix in ((mib, suffix) for mib in args.sizes_mb for suffix in args.formats):
        path = output.parent / f".predict_reading_{mib}mib.{suffix}"  # made here, removed below
        write_input(path, mib, texts)
        try:
            for scheme in SCHEMES:
                command = [
                    sys.executable,
                    __file__,
                    "--run",
                    scheme,
                    str(path),
                    "--workers",
                    str(args.workers),
                    "--batch_size",
                    str(args.batch_size),
                ]
                result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
                results.append(result)
                print(table([result]).splitlines()[-1], flush=True)
        finally:
            path.unlink()
    report = {
        "cpu": platform.processor() or platform.machine(),
        "capabilities": cpu_capabilities(),
        "texts": len(texts),
        "results": results,
    }
    write_json(output, report)
    print(f"CPU flags: {cpu_capabilities()}")
    print(table(results))


if __name__ == "__main__":
    main()
