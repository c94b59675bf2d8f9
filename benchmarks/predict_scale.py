"""acn-predict at scale: tweets/s with images and peak memory, the streaming command beside the one it replaced.

    python benchmarks/predict_scale.py [--output outputs/benchmarks/predict_scale.json] [--image_rows 256]
        [--memory_rows 100000] [--workers 0 2] [--device cpu] [--no_before]

"before" is acn-predict as of commit 9aee70d (read with `git show`): it reads the whole input, opens the images in
the main process and tags 16 batches at a time, with the backbone in fp32. "after" is this tree's acn-predict with
`--num_workers N`, with the backbone in fp32 or in the default precision (`vision_precision="auto"`: int8 on x86
CPUs, calibrated on the four JPEGs; a bf16 copy on a GPU). Every run is a fresh process (`python acn-predict
...`), timed from start to exit (model loading included), with the peak resident memory of its main process
(getrusage), of its largest worker process, and the peak proportional set size (PSS, shared pages split between
the processes that share them) of the whole process tree, sampled every 0.5 s. The model: ACN with small text
sizes and its VGG-16 trunk with random weights (the speed of VGG-16 does not depend on its weights). Section 1:
every row has an image (four 640x480 JPEGs, reused). Section 2 (default backbone; `--memory_rows 0` skips it):
`--memory_rows` rows, one in 1000 with an image, and a tenth as many rows to show how memory grows with rows.
`--device cuda` tags on the GPU (the default precision is then bf16); `--no_before` leaves out "before" (a copy of the
tree without its git history, as the GPU machine gets, cannot read it), and the ratios are then to the first run.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from acn_mner.benchmarking import print_table, write_json
from acn_mner.cpu import cpu_capabilities
from modeling_acn import (
    AcnConfig,
    AcnForTokenClassification,
    AcnImageProcessor,
    AcnPipeline,
    AcnProcessor,
    AcnTokenizer,
)

ROOT = Path(__file__).resolve().parents[1]
BEFORE_COMMIT = "9aee70d"  # acn-predict before streaming and worker processes
LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-OTHER", "I-OTHER")
WORDS = "Obama visits Paris with Merkel and the @nba fans of Chicago Bulls at #Berlin http://t.co/x today".split()
IMAGE_SIZE = (640, 480)  # a common size of tweet photos
SAMPLE_SECONDS = 0.5

RUNNER = """
import json, resource, runpy, sys, time
script, report = sys.argv[1], sys.argv[2]
sys.argv = [script, *sys.argv[3:]]
start = time.perf_counter()
if script.endswith(".py"):
    runpy.run_path(script, run_name="__main__")
else:
    runpy.run_module(script, run_name="__main__", alter_sys=True)
seconds = time.perf_counter() - start
kib = {
    "self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
}
figures = {
    "seconds": seconds,
    "main_peak_rss_mib": kib["self"] / 1024,
    "largest_worker_peak_rss_mib": kib["children"] / 1024,
}
with open(report, "w") as out:
    out.write(json.dumps(figures))
"""  # runs one acn-predict (a script file, or a module name) in a fresh process and reports its time and peak memory
AFTER = "acn_mner.predict"  # this tree's acn-predict, run as a module (it imports its package relatively)
COLUMNS = (
    "output_lines",
    "seconds",
    "tweets_per_second",
    "speed_vs_first_run",
    "main_peak_rss_mib",
    "largest_worker_peak_rss_mib",
    "tree_peak_pss_mib",
    "main_rss_vs_first_run",
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="outputs/benchmarks/predict_scale.json", help="JSON file for every figure.")
    parser.add_argument("--image_rows", type=int, default=256, help="Rows, each with an image, for the speed section.")
    parser.add_argument(
        "--memory_rows",
        type=int,
        default=100_000,
        help="Rows of the memory section's larger input (0 skips that section).",
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="--num_workers values to run.")
    parser.add_argument("--batch_size", type=int, default=16, help="acn-predict --batch_size of every run.")
    parser.add_argument("--device", default="cpu", help="acn-predict --device of every run, e.g. cpu or cuda:0.")
    parser.add_argument(
        "--no_before", action="store_true", help="Leave out acn-predict as of the commit before streaming."
    )
    return parser.parse_args(argv)


# --- inputs --------------------------------------------------------------------------------------


def save_model(folder: Path, vision_precision: str, calibration_images: list[Path]) -> Path:
    """ACN with small text sizes and a random VGG-16 trunk (calibrated when it runs in int8), saved as acn-predict
    loads it."""
    torch.manual_seed(0)
    tokenizer = AcnTokenizer.from_corpus([WORDS])
    config = AcnConfig(
        vocab_size=len(tokenizer),
        char_vocab_size=tokenizer.char_vocab_size,
        word_embedding_dim=32,
        char_embedding_dim=16,
        char_num_filters=16,
        hidden_size=32,
        attention_size=32,
        id2label=dict(enumerate(LABELS)),
        vision_precision=vision_precision,
    )
    model = AcnForTokenClassification(config).eval()
    image_processor = AcnImageProcessor()
    if model.needs_vision_calibration("cpu"):
        pictures = [Image.open(path).convert("RGB") for path in calibration_images]
        model.calibrate_vision(image_processor(images=pictures, return_tensors="pt")["pixel_values"])
    AcnPipeline(model=model, processor=AcnProcessor(image_processor, tokenizer), device="cpu").save_pretrained(folder)
    return folder


def save_images(folder: Path, count: int = 4) -> list[str]:
    """`count` noisy 640x480 JPEGs (noise keeps the files the size of photos)."""
    generator = np.random.default_rng(0)
    names = []
    for number in range(count):
        pixels = generator.integers(0, 256, (IMAGE_SIZE[1], IMAGE_SIZE[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{number}.jpg", quality=90)
        names.append(f"{number}.jpg")
    return names


def write_rows(path: Path, count: int, images: list[str], image_every: int) -> Path:
    """`count` JSONL rows with an `id`, 8 to 15 words, and an image on every `image_every`-th row."""
    with open(path, "w", encoding="utf-8") as out:
        for number in range(count):
            words = WORDS[number % 5 : number % 5 + 8 + number % 8]
            image = images[number % len(images)] if number % image_every == 0 else None
            out.write(json.dumps({"id": f"tweet-{number}", "text": " ".join(words), "image": image}) + "\n")
    return path


def before_script(folder: Path) -> Path:
    """acn-predict as of `BEFORE_COMMIT`, written beside the inputs (it imports this tree's other modules, under the
    names they have had since the library became `acn_mner`)."""
    source = subprocess.run(
        ["git", "show", f"{BEFORE_COMMIT}:acn_commands/predict.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    source = source.replace("from acn_commands.atomic import", "from acn_mner.atomic import")
    source = source.replace("from dataset_script.twitter_mner import", "from acn_mner.corpus import")
    path = folder / "predict_before.py"
    path.write_text(source, encoding="utf-8")
    return path


# --- measuring -----------------------------------------------------------------------------------


def tree_pss_mib(pid: int) -> float:
    """PSS of a process and all its descendants, in MiB (0 for processes that ended meanwhile)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total / 1024


def run_predict(script: Path | str, model: Path, rows: Path, output: Path, extra: list[str], settings) -> dict:
    """One acn-predict run in a fresh process: seconds, peak memories, and the output's line count."""
    report = output.with_suffix(".report.json")
    command = [
        sys.executable,
        "-c",
        RUNNER,
        str(script),
        str(report),
        "--model",
        str(model),
        "--input",
        str(rows),
        "--output",
        str(output),
        "--device",
        settings.device,
        "--batch_size",
        str(settings.batch_size),
        *extra,
    ]
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "TQDM_DISABLE": "1",
    }
    log = output.with_suffix(".log")
    with open(log, "w", encoding="utf-8") as stderr:  # a file: a pipe read only at the end would fill and block
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=stderr)
        peak_pss = 0.0
        while process.poll() is None:
            peak_pss = max(peak_pss, tree_pss_mib(process.pid))
            time.sleep(SAMPLE_SECONDS)
    if process.returncode != 0:
        raise RuntimeError(f"{script} on {rows.name} failed:\n{log.read_text(encoding='utf-8')[-3000:]}")
    result = json.loads(report.read_text())
    with open(output, encoding="utf-8") as lines:
        result["output_lines"] = sum(1 for _ in lines)
    result["tree_peak_pss_mib"] = peak_pss
    return result


def compare(label: str, runs: dict, rows: Path, work: Path, settings) -> dict:
    """Each run (name -> script, model, extra flags) on `rows`, with speed and memory relative to the first run
    ("before" unless `--no_before`)."""
    results = {}
    for name, (script, model, extra) in runs.items():
        print(f"{label}: {name} ...", flush=True)
        result = run_predict(script, model, rows, work / f"{label}-{name.replace(' ', '_')}.jsonl", extra, settings)
        result["tweets_per_second"] = result["output_lines"] / result["seconds"]
        results[name] = result
    first = next(iter(results.values()))
    for result in results.values():
        result["speed_vs_first_run"] = result["tweets_per_second"] / first["tweets_per_second"]
        result["main_rss_vs_first_run"] = result["main_peak_rss_mib"] / first["main_peak_rss_mib"]
    return results


def same_predictions(work: Path, label: str, names) -> bool | None:
    """These runs of a section wrote the same predictions (the `row` and input fields, tags, scores); None for a
    single run, which has nothing to agree with."""
    texts = {name: (work / f"{label}-{name.replace(' ', '_')}.jsonl").read_text(encoding="utf-8") for name in names}
    return len(set(texts.values())) == 1 if len(texts) > 1 else None


def main(argv=None):
    args = parse_args(argv)
    results = {
        "machine": {
            "threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "cpu": cpu_capabilities(),
            "processor": platform.processor() or platform.machine(),
        },
        "settings": {
            "batch_size": args.batch_size,
            "image_rows": args.image_rows,
            "memory_rows": args.memory_rows,
            "device": args.device,
            "before_commit": None if args.no_before else BEFORE_COMMIT,
        },
    }
    print(f"CPU: {results['machine']['cpu']}, torch threads {results['machine']['threads']}")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        images = save_images(work)
        fp32_model = save_model(work / "model_fp32", "fp32", [work / name for name in images])
        default_model = save_model(work / "model_default", "auto", [work / name for name in images])
        precision = AcnForTokenClassification.from_pretrained(default_model).effective_vision_precision(args.device)
        results["settings"]["default_vision_precision"] = precision
        after = AFTER
        before = {} if args.no_before else {"before, fp32 backbone": (before_script(work), fp32_model, [])}
        fp32_runs = {**before, "after, 0 workers, fp32 backbone": (after, fp32_model, ["--num_workers", "0"])}
        default_runs = {
            f"after, {n} workers, {precision} backbone": (after, default_model, ["--num_workers", str(n)])
            for n in args.workers
        }
        rows = write_rows(work / "images.jsonl", args.image_rows, images, image_every=1)
        results["every_row_with_an_image"] = compare("images", {**fp32_runs, **default_runs}, rows, work, args)
        results["every_row_with_an_image"]["same_predictions"] = {
            "fp32 runs": same_predictions(work, "images", fp32_runs),
            f"{precision} runs": same_predictions(work, "images", default_runs),
        }
        memory_runs = ({} if args.no_before else {"before": (before_script(work), default_model, [])}) | default_runs
        for count in (args.memory_rows // 10, args.memory_rows) if args.memory_rows else ():
            rows = write_rows(work / f"rows{count}.jsonl", count, images, image_every=1000)
            label = f"{count}_rows_one_in_1000_with_an_image"
            results[label] = compare(f"rows{count}", memory_runs, rows, work, args)
            results[label]["same_predictions"] = same_predictions(work, f"rows{count}", memory_runs)
    for title, section in results.items():
        if title not in ("machine", "settings"):
            runs = {name: value for name, value in section.items() if isinstance(value, dict) and "seconds" in value}
            print_table(f"{title} (ratios to the first run)", runs, name_header="run", columns=COLUMNS)
            print(f"same predictions: {section['same_predictions']}")
    write_json(args.output, results)
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
