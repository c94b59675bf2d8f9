"""The corpus command, `acn-dataset` (also `python dataset_script/twitter_mner.py`): export a corpus in the Twitter
format as a Parquet dataset folder, or cache a model's image features for an exported one.

Export (``--push_to_hub`` is the only step that needs the network)::

    acn-dataset --data_dir D [--image_dir I] --output_dir O --corpus twitter-2015 \\
        [--label_map OTHER=MISC] [--push_to_hub REPO]

A corpus of one's own in the same format: no ``--corpus``, and the card's name, license and citation from
``--dataset_name``, ``--license`` and ``--citation_file`` (which also replace a ``--corpus`` preset's); the card claims
no license or citation that it is not given.

Cache the image features of an exported dataset::

    acn-dataset cache-features --dataset O --model M --output_dir F
"""

import argparse
import logging
import os
import sys
from pathlib import Path

import datasets
import torch

from modeling_acn.configuration_acn import VISION_BACKBONES, VISION_PRECISIONS
from modeling_acn.image_processing_acn import MAX_IMAGE_PIXELS

from .command_line import ArgumentParser, existing_folder, folder_or_hub_id, one_line_errors
from .corpus import SPLIT_FILES, load_twitter_mner, parse_label_map
from .dataset_card import CORPORA, check_citation, check_license_id, image_problem_table
from .feature_cache import CALIBRATION_IMAGES, feature_extractor, save_feature_cache
from .output_check import refuse_overwriting_inputs
from .parquet_export import export_parquet, push_folder_to_hub

logger = logging.getLogger(__name__)

CACHE_COMMAND = "cache-features"

# --- command line ------------------------------------------------------------------------------


def hub_license(value: str) -> str:
    """argparse type of --license: a Hub license id."""
    try:
        return check_license_id(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def citation_file(value: str) -> str:
    """argparse type of --citation_file: the BibTeX text of the file, read now so that a bad file stops the command
    before the corpus is read."""
    try:
        text = Path(value).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise argparse.ArgumentTypeError(f"no such file: {value!r}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise argparse.ArgumentTypeError(f"cannot read {value!r}: {error}") from None
    try:
        return check_citation(text, source=repr(value))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_export_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(
        description="Convert a multimodal NER corpus in the Twitter-2015/2017 format into a Parquet dataset folder. "
        f"Run '{Path(sys.argv[0]).name} {CACHE_COMMAND} --help' for the image feature cache."
    )
    parser.add_argument(
        "--data_dir", required=True, type=existing_folder, help="Folder with train.txt, valid.txt and test.txt."
    )
    parser.add_argument(
        "--image_dir", type=existing_folder, help="Folder with <IMGID>.jpg; without it the dataset is text only."
    )
    parser.add_argument("--output_dir", required=True, help="Folder for data/*.parquet and README.md.")
    parser.add_argument(
        "--corpus",
        choices=sorted(CORPORA),
        help="A known corpus, whose name, license and citation the card takes (the flags below replace them); "
        "without it, a corpus of your own: the card claims no license or citation that the flags below do not give.",
    )
    parser.add_argument(
        "--dataset_name", help="The card's title and pretty_name (default: the corpus's, else the data_dir's name)."
    )
    parser.add_argument(
        "--license",
        type=hub_license,
        help="The corpus's license, a Hub license id such as cc-by-4.0 (default: the corpus's, else none stated).",
    )
    parser.add_argument(
        "--citation_file",
        type=citation_file,
        metavar="BIB",
        help="A BibTeX file whose entries the card cites (default: the corpus's citation, else none).",
    )
    parser.add_argument("--label_map", nargs="+", default=[], metavar="OLD=NEW", help="Rename entity types.")
    parser.add_argument("--max_image_pixels", type=int, default=MAX_IMAGE_PIXELS, help="Refuse larger images.")
    parser.add_argument("--overwrite", action="store_true", help="Replace the data of a non-empty output_dir.")
    parser.add_argument(
        "--push_to_hub", metavar="REPO", help="Upload the export (card and shards) to this Hub dataset repository."
    )
    parser.add_argument(
        "--hub_private_repo",
        action="store_true",
        help="Create that repository private (an existing one keeps its visibility).",
    )
    return parser.parse_args(argv)


def parse_cache_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(
        prog=f"{Path(sys.argv[0]).name} {CACHE_COMMAND}",
        description=(
            "Store the model's image features as a dataset column (float16, 49 regions x the backbone's channels)."
        ),
    )
    parser.add_argument(
        "--dataset", required=True, type=folder_or_hub_id, help="Exported folder or Hub id that load_dataset reads."
    )
    trunk = parser.add_mutually_exclusive_group(required=True)
    trunk.add_argument(
        "--model",
        type=folder_or_hub_id,
        help="ACN checkpoint folder or Hub id whose image backbone and processor to use.",
    )
    trunk.add_argument(
        "--vision_weights",
        help="Backbone without a checkpoint: 'imagenet' (the published weights: torchvision's, or CLIP's through "
        "transformers; cached or downloaded), a local .pth/.safetensors file, or 'random' (seeded by --seed; only for "
        "offline demos and tests).",
    )
    parser.add_argument(
        "--vision_backbone",
        default="vgg16",
        choices=sorted(VISION_BACKBONES),
        help="Backbone with --vision_weights (a --model brings its own).",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the 'random' trunk.")
    parser.add_argument(
        "--vision_precision",
        choices=VISION_PRECISIONS,
        help="Precision of the backbone (AcnConfig.vision_precision); default: the checkpoint's, or auto.",
    )
    parser.add_argument(
        "--calibration_images",
        type=int,
        default=CALIBRATION_IMAGES,
        help="Training images that calibrate an int8 backbone (the first ones with a picture).",
    )
    parser.add_argument("--output_dir", required=True, help="Where save_to_disk writes the dataset with features.")
    parser.add_argument("--batch_size", type=int, default=32, help="Images per forward pass.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="Torch device.")
    parser.add_argument("--cache_dir", help="Folder for datasets' Arrow files, loaded and computed (default: HF's).")
    return parser.parse_args(argv)


def run_export(args: argparse.Namespace) -> None:
    # the corpus files; an image (<id>.jpg) has no name the export writes (README.md, data/*.parquet)
    inputs = [("--data_dir file", Path(args.data_dir) / name) for name in SPLIT_FILES.values()]
    refuse_overwriting_inputs(args.output_dir, inputs, flag="--output_dir", folder=True)
    dataset = load_twitter_mner(
        args.data_dir,
        args.image_dir,
        label_map=parse_label_map(args.label_map),
        max_image_pixels=args.max_image_pixels,
    )
    card_path = export_parquet(
        dataset,
        args.output_dir,
        source=Path(os.path.abspath(args.data_dir)).name,  # the folder's own name, also for '.'
        corpus=args.corpus,
        name=args.dataset_name,
        license=args.license,
        citation=args.citation_file,
        overwrite=args.overwrite,
    )
    logger.info("tweets: %s", {split: part.num_rows for split, part in dataset.items()})
    logger.info("images per split:\n%s", image_problem_table(dataset))
    logger.info("wrote %s", card_path.parent)
    if args.push_to_hub:
        push_folder_to_hub(card_path.parent, args.push_to_hub, dataset.keys(), private=args.hub_private_repo)
        logger.info("pushed to https://huggingface.co/datasets/%s", args.push_to_hub)


def run_cache_features(args: argparse.Namespace) -> None:
    inputs = {
        "--dataset folder": args.dataset,
        "model folder": args.model,
        "--vision_weights file": args.vision_weights,
    }
    refuse_overwriting_inputs(args.output_dir, inputs.items(), flag="--output_dir", folder=True)
    model, image_processor = feature_extractor(
        args.model, args.vision_weights, args.vision_backbone, args.vision_precision, args.seed
    )
    dataset = datasets.load_dataset(args.dataset, cache_dir=args.cache_dir)
    save_feature_cache(
        dataset,
        model,
        image_processor,
        args.output_dir,
        device=args.device,
        calibration_images=args.calibration_images,
        batch_size=args.batch_size,
        cache_dir=args.cache_dir,
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if argv[:1] == [CACHE_COMMAND]:
        run_cache_features(parse_cache_args(argv[1:]))
    else:
        run_export(parse_export_args(argv))


cli = one_line_errors(main)  # the console command

if __name__ == "__main__":
    cli()
