"""The cost of one long tweet: time and peak memory to tag a tweet of 1k, 10k and 100k characters, text only, through
the pipeline, each size in a fresh process (peak resident memory is per process); and the tokenizer alone on the
same sizes of a pathological input (a URL scheme followed by a punctuation run, which once took minutes).

    python benchmarks/long_tweets.py [--output outputs/benchmarks/long_tweets.json]

The model is the paper's ACN at its default sizes with untrained weights (cost does not depend on the weights). A
tweet with an image is refused past `max_image_words` (256) words, before its image is read, so no row with an image
reaches the quadratic co-attention; text-only rows of any length take the linear text path measured here.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

import torch

from acn_mner.benchmarking import write_json
from acn_mner.cpu import cpu_capabilities

SIZES = (1_000, 10_000, 100_000)  # characters
WORDS = "Obama visits Paris with Merkel and the @nba fans of Chicago Bulls at #Berlin today".split()
PROBE = """
import json, resource, sys, time
from modeling_acn import (
    AcnConfig, AcnForTokenClassification, AcnImageProcessor, AcnPipeline, AcnProcessor, AcnTokenizer
)

characters, words = int(sys.argv[1]), sys.argv[2].split()
tokenizer = AcnTokenizer.from_corpus([words])
config = AcnConfig(vocab_size=len(tokenizer), char_vocab_size=tokenizer.char_vocab_size)
model = AcnForTokenClassification(config).eval()
pipe = AcnPipeline(model=model, processor=AcnProcessor(AcnImageProcessor(), tokenizer), device="cpu")
pipe("Obama visits Paris")  # warm-up
text = (" ".join(words) + " ") * (characters // (len(" ".join(words)) + 1) + 1)
text = text[:characters].strip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
result = pipe(text, return_tags=True)
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"characters": len(text), "words": len(result["tags"]), "seconds": seconds,
                  "peak_rss_mib": peak / 1024, "growth_mib": (peak - before) / 1024}))
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="outputs/benchmarks/long_tweets.json", help="JSON file for every figure.")
    return parser.parse_args(argv)


def tag_in_fresh_process(characters: int) -> dict:
    finished = subprocess.run(
        [sys.executable, "-c", PROBE, str(characters), " ".join(WORDS)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    return json.loads(finished.stdout.strip().splitlines()[-1])


def tokenizer_seconds(characters: int) -> float:
    import time

    from modeling_acn import AcnTokenizer

    tokenizer = AcnTokenizer.from_corpus([WORDS])
    text = "see http:" + "." * characters + "x now"
    started = time.perf_counter()
    tokenizer.split_text(text)
    return time.perf_counter() - started


def main(argv=None):
    args = parse_args(argv)
    results = {
        "machine": {
            "cpu": cpu_capabilities(),
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "rows": [],
    }
    print(f"CPU: {results['machine']['cpu']}, torch threads {results['machine']['threads']}")
    header = f"{'characters':>10} {'words':>7} {'tag s':>8} {'peak MiB':>9} {'growth MiB':>11}"
    print(f"{header} {'tokenizer s (pathological)':>27}")
    for characters in SIZES:
        row = tag_in_fresh_process(characters)
        row["pathological_tokenizer_seconds"] = tokenizer_seconds(characters)
        results["rows"].append(row)
        print(
            f"{row['characters']:>10} {row['words']:>7} {row['seconds']:>8.2f} {row['peak_rss_mib']:>9.0f} "
            f"{row['growth_mib']:>11.0f} {row['pathological_tokenizer_seconds']:>27.4f}"
        )
    write_json(args.output, results)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()
