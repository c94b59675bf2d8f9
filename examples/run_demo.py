"""The demo behind `make demo`: a corpus whose images decide entity types, ACN against the text-only model.

    python examples/run_demo.py [--output_dir outputs/demo]

Steps: write the seeded demo corpus; export it as a datasets folder; cache image features (VGG-16 pool5 by default,
from a seeded random backbone: no ImageNet weights can be downloaded offline, and the figures are designed to survive
it; int8 on x86 CPUs, calibrated on the first training images); train ACN and the
text-only CNN-BiLSTM-CRF with examples/train_acn.py and print both tables; reload the ACN folder in a fresh process
with AutoModelForTokenClassification and AutoProcessor, tag a new tweet and image with the pipeline and draw its
attention picture; measure, on the test split's image-decided entities, the share of their visual attention on the
cells the figure covers and what occluding those cells (against as many others) does to the tag
(acn_mner/demo_attention.py); write demo_results.json with these and test F1 overall and on the image-decided
entities. Off a terminal (a log file), no progress bars are drawn; each results table is printed once, by training.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np

from acn_mner import demo_attention, demo_corpus
from acn_mner import train as train_acn
from acn_mner.atomic import write_bytes, write_text
from acn_mner.corpus import load_twitter_mner
from acn_mner.feature_cache import feature_extractor, save_feature_cache
from acn_mner.parquet_export import export_parquet
from acn_mner.progress import quiet_progress_bars_off_terminal
from modeling_acn import VISION_BACKBONES, VISION_PRECISIONS, AcnForTokenClassification, AcnProcessor

ROOT = Path(__file__).resolve().parents[1]
# Small enough for about two minutes on two quiet cores. The patience outlasts ACN's plateau: it tags image-decided
# entities by chance for about ten epochs, until the attention has found the figure (dev F1 100 by epoch 14).
DEMO_TRAINING = [
    "--word_embedding_dim",
    "50",
    "--hidden_size",
    "100",
    "--per_device_train_batch_size",
    "16",
    "--learning_rate",
    "2e-3",
    "--num_train_epochs",
    "25",
    "--patience",
    "10",
    "--checkpointing_steps",
    "none",
    "--stop_at_perfect_dev",
    "--overwrite_output_dir",  # a rerun of the demo replaces its own models
]
NEW_TWEET = "look at Kolbi today !"
RELOAD_SCRIPT = """
import json
import sys
from transformers import AutoModelForTokenClassification, AutoProcessor, pipeline

folder, image, picture = sys.argv[1:4]
model = AutoModelForTokenClassification.from_pretrained(folder, trust_remote_code=True)
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
print(
    f"reloaded {type(model).__module__}.{type(model).__name__} "
    f"and {type(processor).__module__}.{type(processor).__name__}"
)
tagger = pipeline("multimodal-ner", model=folder, trust_remote_code=True)
from acn_mner.explain import explain_tweet  # the project's drawing code; the model above came from the folder

print(tagger(sys.argv[4], image=image))
result = explain_tweet(tagger, sys.argv[4], image, picture)
print(f"attention picture: {picture}")
cells = [int(cell) for cell in sys.argv[5].split(",")]
shares = {
    word: float(attention.ravel()[cells].sum())
    for word, tag, attention in zip(result["words"], result["tags"], result["visual_attentions"])
    if tag != "O"
}
print(json.dumps({"figure_cells": cells, "attention_share": shares}))
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/demo", help="Corpus, features, models and results go here.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the corpus, the random VGG trunk and training.")
    parser.add_argument(
        "--vision_backbone",
        default="vgg16",
        choices=sorted(VISION_BACKBONES),
        help="Image backbone that computes the features (random seeded weights).",
    )
    parser.add_argument(
        "--vision_precision",
        default="auto",
        choices=VISION_PRECISIONS,
        help=(
            "Precision of the backbone (AcnConfig.vision_precision); auto picks the fastest accurate one for this CPU."
        ),
    )
    parser.add_argument(
        "--mixed_precision",
        default="no",
        choices=["no", "fp16", "bf16"],
        help="Accelerate mixed precision of training (GPUs).",
    )
    return parser.parse_args(argv)


def build_features(output_dir: Path, seed: int, vision_backbone: str, vision_precision: str) -> Path:
    corpus = demo_corpus.write_demo_corpus(output_dir / "corpus", seed=seed)
    dataset = load_twitter_mner(corpus, corpus / demo_corpus.IMAGE_DIR)
    export_parquet(dataset, output_dir / "dataset", source="acn-mner demo corpus", corpus="demo", overwrite=True)
    features = output_dir / "features"
    model, image_processor = feature_extractor(
        vision_weights="random", vision_backbone=vision_backbone, vision_precision=vision_precision, seed=seed
    )
    cache_dir = output_dir / "cache"
    exported = datasets.load_dataset(str(output_dir / "dataset"), cache_dir=str(cache_dir))
    save_feature_cache(exported, model, image_processor, features, device="cpu", cache_dir=cache_dir)
    return features


def train(features: Path, output_dir: Path, variant: str, seed: int, mixed_precision: str) -> dict:
    train_acn.main(
        [
            "--dataset_name",
            str(features),
            "--output_dir",
            str(output_dir),
            "--variant",
            variant,
            "--seed",
            str(seed),
            "--mixed_precision",
            mixed_precision,
            *DEMO_TRAINING,
        ]
    )
    return json.loads((output_dir / "all_results.json").read_text())


def image_decided_f1(model_dir: Path, corpus: Path) -> float:
    predictions = read_predicted_tags(model_dir / "test_predictions.txt")
    entries = json.loads((corpus / demo_corpus.SIDECAR_FILE).read_text())["test"]
    return demo_corpus.image_decided_scores(predictions, entries)["f1"]


def read_predicted_tags(path: Path) -> list[list[str]]:
    """The third column of `token gold pred` lines, one list per tweet."""
    blocks = path.read_text(encoding="utf-8").strip("\n").split("\n\n")
    return [[line.rsplit(" ", 1)[1] for line in block.splitlines()] for block in blocks]


def new_tweet_image(output_dir: Path, seed: int) -> tuple[Path, list[int]]:
    """A fresh picture with the LOC figure (the demo's ambiguous name in it should be tagged LOC), and the 7 x 7
    cells its figure covers."""
    path = output_dir / "new_tweet.jpg"
    image, placement = demo_corpus.draw_image_and_figure(np.random.default_rng([seed, 99]), "LOC")
    write_bytes(path, demo_corpus.jpeg_bytes(image))
    return path, demo_corpus.figure_cells("LOC", placement)


def reload_and_tag(model_dir: Path, output_dir: Path, seed: int) -> dict:
    """A fresh Python process, started elsewhere, loads the folder through the Auto classes and the pipeline, tags
    the new tweet and draws its picture. Returns the figure's cells and each entity word's attention share on them."""
    image, cells = new_tweet_image(output_dir, seed)
    command = [
        sys.executable,
        "-c",
        RELOAD_SCRIPT,
        str(model_dir.resolve()),
        str(image.resolve()),
        str((output_dir / "attention.png").resolve()),
        NEW_TWEET,
        ",".join(map(str, cells)),
    ]
    finished = subprocess.run(
        command, check=True, cwd=output_dir.parent.resolve().anchor, stdout=subprocess.PIPE, text=True
    )
    print(finished.stdout, end="")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def probe_attention(model_dir: Path, features: Path, corpus: Path, seed: int) -> dict:
    """Attention share and occlusion effect on the test split's image-decided entities (demo_attention.py); the
    occluding feature is the mean cell of the training images."""
    model = AcnForTokenClassification.from_pretrained(model_dir)
    processor = AcnProcessor.from_pretrained(model_dir)
    cached = datasets.load_from_disk(str(features))
    train_split = cached["train"].with_format("numpy", columns=["image_features", "image_mask"])[:]
    fill = demo_attention.mean_cell(train_split["image_features"], train_split["image_mask"])
    entries = json.loads((corpus / demo_corpus.SIDECAR_FILE).read_text())["test"]
    return demo_attention.probe_image_decided(model, processor, cached["test"], entries, fill, seed=seed)


def main(argv=None):
    args = parse_args(argv)
    quiet_progress_bars_off_terminal()
    output_dir = Path(args.output_dir)
    started = time.perf_counter()
    features = build_features(output_dir, args.seed, args.vision_backbone, args.vision_precision)
    results = {}
    for name, variant in (("acn", "full"), ("text_only", "text-only")):
        print(f"\n{name}:", flush=True)  # training prints its results table under this name
        results[variant] = train(features, output_dir / name, variant, args.seed, args.mixed_precision)
    new_tweet = reload_and_tag(output_dir / "acn", output_dir, args.seed)
    corpus = output_dir / "corpus"
    summary = {
        "acn_test_f1": results["full"]["test_overall_f1"],
        "text_only_test_f1": results["text-only"]["test_overall_f1"],
        "acn_image_decided_test_f1": image_decided_f1(output_dir / "acn", corpus),
        "text_only_image_decided_test_f1": image_decided_f1(output_dir / "text_only", corpus),
        "acn_image_decided_attention": probe_attention(output_dir / "acn", features, corpus, args.seed),
        "new_tweet_attention": new_tweet,
        "vision_backbone": args.vision_backbone,
        "vision_precision": json.loads((output_dir / "acn" / "config.json").read_text())["vision_precision"],
        "mixed_precision": args.mixed_precision,
        "seconds": round(time.perf_counter() - started, 1),
    }
    summary["mechanism_check_passed"] = (
        summary["acn_test_f1"] >= 0.95 and summary["text_only_image_decided_test_f1"] <= 0.70
    )
    write_text(output_dir / "demo_results.json", json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    if not summary["mechanism_check_passed"]:
        sys.exit("mechanism check failed: ACN test F1 must be >= 0.95 and text-only <= 0.70 on image-decided entities")


if __name__ == "__main__":
    main()
