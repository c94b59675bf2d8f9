"""A small seeded multimodal NER corpus in the Twitter-2015 layout, built so that a model must read the image.

The real corpora's images cannot ship with the project, so the demo writes its own::

    <output_dir>/{train,valid,test}.txt   an ``IMGID:<id>`` line, ``token<TAB>tag`` lines, a blank line between tweets
    <output_dir>/images/<id>.jpg          224 x 224 JPEG
    <output_dir>/image_decided.json       per split, the entities whose type only the image tells, and the 7 x 7
                                          cells their image's figure covers

Half the tweets name a *text-decided* entity: its name comes from a list of one type and its context says the
type ("flying to Port Caddis tomorrow"). The other half name an *image-decided* entity: an ambiguous name, drawn
with each of the four types equally often, in a context that is the same for every type ("look at Kolbi today
!"). Its type is shown only by the picture: a large figure of that type (PER a red circle, LOC a green triangle,
ORG a blue square, OTHER a yellow diamond) at a random place among smaller, no lighter than the background, grey
distractor shapes on a noisy background.
Text-decided tweets show the figure of a random type, so the image tells nothing about their entities.

    python -m acn_mner.demo_corpus --output_dir D [--seed 0]

The same seed and sizes give byte-identical files.
"""

import argparse
import io
import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from seqeval.metrics.sequence_labeling import get_entities

from .atomic import write_bytes, write_text
from .corpus import IMAGE_ID_PREFIX, IMAGE_SUFFIX, OUTSIDE_TAG, SPLIT_FILES

logger = logging.getLogger(__name__)

ENTITY_TYPES = ("PER", "LOC", "ORG", "OTHER")  # Twitter-2015's types
SPLIT_SIZES = {"train": 600, "validation": 150, "test": 200}
IMAGE_DIR = "images"
SIDECAR_FILE = "image_decided.json"
IMAGE_DECIDED_FRACTION = 0.5

# invented names, one list per type: the name alone tells the type of a text-decided entity
TYPED_NAMES = {
    "PER": (
        "Marlo Quenby",
        "Tessa Vandrell",
        "Oskar Lindqvane",
        "Priya Halloway",
        "Jonah Merrit",
        "Ines Calvero",
        "Dario Finch",
        "Lotte Brakeman",
    ),
    "LOC": (
        "Port Caddis",
        "Vellmoor",
        "Lake Ombra",
        "Ashby Heights",
        "Kestrel Bay",
        "Drummore",
        "Saltmarsh",
        "Fenwick Valley",
    ),
    "ORG": (
        "Trelix Corp",
        "Norvane Labs",
        "Banfield United",
        "Copperline Bank",
        "Quorra Media",
        "Halvex",
        "Stonegate FC",
        "Brightwell Airways",
    ),
    "OTHER": (
        "Starfall Cup",
        "Hexbound",
        "Moonrise Fest",
        "Iron Tide",
        "Galewatch 3",
        "Emberfall",
        "Night Harbor",
        "Crownsong",
    ),
}
# invented names that are each drawn with every type: only the image tells which
AMBIGUOUS_NAMES = (
    "Kolbi",
    "Verran",
    "Zephine",
    "Ardley",
    "Tamsk",
    "Quillon",
    "Dovra",
    "Isket",
    "Brannoch",
    "Solvey",
    "Corrow",
    "Mirelle",
)

# templates are space-separated tokens; {TYPE} is a slot for a name of that type
TEXT_TEMPLATES = (
    "happy birthday to {PER} !",
    "{PER} scored twice last night",
    "great interview with {PER} this morning",
    "flying to {LOC} tomorrow",
    "sunset over {LOC} tonight",
    "traffic jam near {LOC} again",
    "{ORG} shares fell 5 % today",
    "just got hired by {ORG} !",
    "{ORG} announces a new ceo",
    "watching {OTHER} on tv",
    "the new {OTHER} trailer is out",
    "tickets for {OTHER} sold out",
    "{PER} arrives in {LOC} for {OTHER}",
    "{PER} signs with {ORG}",
    "{ORG} opens an office in {LOC}",
)
# identical for every type: the text cannot decide the entity
IMAGE_TEMPLATES = (
    "look at {NAME} today !",
    "can't stop thinking about {NAME}",
    "{NAME} is trending right now",
    "so proud of {NAME} #blessed",
    "everyone is talking about {NAME}",
    "RT @fan : {NAME} again",
)
AMBIGUOUS_SLOT = "NAME"

IMAGE_SIDE = 224  # VGG-16's input, so the image processor's resize changes nothing
JPEG_QUALITY = 90
BACKGROUND_GREY = (90, 170)  # range of the background's mean grey level
BACKGROUND_NOISE = 20.0  # standard deviation of per-pixel, per-channel noise
FIGURE_SIDE = (IMAGE_SIDE // 4, IMAGE_SIDE // 3)  # large, so that a randomly initialised VGG still sees it
# Distractors are smaller than any figure and never lighter than the lightest background: a distractor as large as
# the figure and lighter than the background drew the attention of some image-decided entities off the figure.
DISTRACTOR_SIDE = (IMAGE_SIDE // 8, IMAGE_SIDE // 5)
NUM_DISTRACTORS = (3, 6)
DISTRACTOR_GREY = (40, BACKGROUND_GREY[1])  # grey never marks a type
SHAPES = ("circle", "triangle", "square", "diamond")
# The backbones' 7 x 7 regions (VGG-16 pool5, ResNet-152 layer4, CLIP's patches) tile the 224 x 224 input in 32 x 32
# squares, row-major. A figure covers the cells it fills at least a quarter of: one to nine cells, never none (of every
# placement, the fullest cell is at least 40% filled: a side-56 triangle or diamond at worst).
GRID_SIDE = 7
CELL_SIDE = IMAGE_SIDE // GRID_SIDE
MIN_CELL_COVERAGE = 0.25


@dataclass(frozen=True)
class Figure:
    shape: str
    colour: tuple[int, int, int]


FIGURES = {
    "PER": Figure("circle", (220, 30, 30)),
    "LOC": Figure("triangle", (30, 190, 40)),
    "ORG": Figure("square", (30, 70, 230)),
    "OTHER": Figure("diamond", (245, 205, 20)),
}


@dataclass(frozen=True)
class DemoTweet:
    """A generated tweet; ``image_decided`` is the ``(start, end, type)`` span (end exclusive) the image decides."""

    image_id: str
    tokens: list[str]
    tags: list[str]
    figure_type: str
    image_decided: tuple[int, int, str] | None


@dataclass(frozen=True)
class Placement:
    """Where a shape is drawn: its bounding square's top-left pixel and side."""

    left: int
    top: int
    side: int


# --- text --------------------------------------------------------------------------------------


def slot_name(token: str) -> str | None:
    return token[1:-1] if token.startswith("{") and token.endswith("}") else None


def fill_template(template: str, names: dict[str, tuple[str, str]]) -> tuple[list[str], list[str], dict[str, int]]:
    """Tokens and BIO tags of ``template`` with each slot replaced by ``names[slot] = (name, type)``.

    Also returns where each slot's name starts.
    """
    tokens, tags, starts = [], [], {}
    for token in template.split():
        slot = slot_name(token)
        if slot is None:
            tokens.append(token)
            tags.append(OUTSIDE_TAG)
            continue
        name, kind = names[slot]
        starts[slot] = len(tokens)
        words = name.split()
        tokens += words
        tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
    return tokens, tags, starts


def text_decided_tweet(rng: np.random.Generator, image_id: str) -> DemoTweet:
    template = TEXT_TEMPLATES[rng.integers(len(TEXT_TEMPLATES))]
    slots = [slot for token in template.split() if (slot := slot_name(token))]
    names = {kind: (TYPED_NAMES[kind][rng.integers(len(TYPED_NAMES[kind]))], kind) for kind in slots}
    tokens, tags, _ = fill_template(template, names)
    figure_type = ENTITY_TYPES[rng.integers(len(ENTITY_TYPES))]  # unrelated to the text
    return DemoTweet(image_id, tokens, tags, figure_type, None)


def image_decided_deck(rng: np.random.Generator, count: int) -> list[tuple[str, str, str]]:
    """``count`` (template, ambiguous name, type) triples: shuffled rounds of every combination, so that each
    name and each context occurs with each type equally often (up to the last, partial round)."""
    combinations = list(itertools.product(IMAGE_TEMPLATES, AMBIGUOUS_NAMES, ENTITY_TYPES))
    rounds = -(-count // len(combinations))  # ceiling division
    order = [index for _ in range(rounds) for index in rng.permutation(len(combinations))][:count]  # [] for 0
    return [combinations[index] for index in order]


def image_decided_tweet(image_id: str, template: str, name: str, kind: str) -> DemoTweet:
    tokens, tags, starts = fill_template(template, {AMBIGUOUS_SLOT: (name, kind)})
    start = starts[AMBIGUOUS_SLOT]
    return DemoTweet(image_id, tokens, tags, kind, (start, start + len(name.split()), kind))


# --- images ------------------------------------------------------------------------------------


def shape_points(shape: str, left: int, top: int, side: int) -> list[tuple[int, int]]:
    right, bottom, middle_x, middle_y = left + side, top + side, left + side // 2, top + side // 2
    if shape == "triangle":
        return [(middle_x, top), (right, bottom), (left, bottom)]
    if shape == "square":
        return [(left, top), (right, top), (right, bottom), (left, bottom)]
    if shape == "diamond":
        return [(middle_x, top), (right, middle_y), (middle_x, bottom), (left, middle_y)]
    raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


def draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, left: int, top: int, side: int, colour: int | tuple[int, int, int]
) -> None:
    if shape == "circle":
        draw.ellipse((left, top, left + side, top + side), fill=colour)
    else:
        draw.polygon(shape_points(shape, left, top, side), fill=colour)


def random_placement(rng: np.random.Generator, side_range: tuple[int, int]) -> Placement:
    side = int(rng.integers(side_range[0], side_range[1] + 1))
    left, top = rng.integers(0, IMAGE_SIDE - side + 1, size=2)
    return Placement(int(left), int(top), side)


def noisy_background(rng: np.random.Generator) -> Image.Image:
    grey = rng.uniform(*BACKGROUND_GREY)
    pixels = grey + rng.normal(0.0, BACKGROUND_NOISE, size=(IMAGE_SIDE, IMAGE_SIDE, 3))  # (height, width, rgb)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def draw_image(rng: np.random.Generator, figure_type: str) -> Image.Image:
    """Grey distractors of every shape, then the type's figure on top so that nothing hides it."""
    return draw_image_and_figure(rng, figure_type)[0]


def draw_image_and_figure(rng: np.random.Generator, figure_type: str) -> tuple[Image.Image, Placement]:
    """`draw_image`'s picture and where its figure is (the same random draws, so the same picture)."""
    scene = draw_scene(rng, figure_type)
    return scene.image, scene.figure


@dataclass(frozen=True)
class Distractor:
    shape: str
    grey: int
    placement: Placement


@dataclass(frozen=True)
class Scene:
    """A drawn picture, where its figure is, and its distractors in drawing order."""

    image: Image.Image
    figure: Placement
    distractors: list[Distractor]


def draw_scene(rng: np.random.Generator, figure_type: str) -> Scene:
    """`draw_image`'s picture (the same random draws), with every shape's placement."""
    image = noisy_background(rng)
    draw = ImageDraw.Draw(image)
    distractors = []
    for _ in range(int(rng.integers(NUM_DISTRACTORS[0], NUM_DISTRACTORS[1] + 1))):
        shape = SHAPES[rng.integers(len(SHAPES))]
        grey = int(rng.integers(*DISTRACTOR_GREY))
        placement = random_placement(rng, DISTRACTOR_SIDE)
        draw_shape(draw, shape, placement.left, placement.top, placement.side, (grey, grey, grey))
        distractors.append(Distractor(shape, grey, placement))
    figure = FIGURES[figure_type]
    placement = random_placement(rng, FIGURE_SIDE)
    draw_shape(draw, figure.shape, placement.left, placement.top, placement.side, figure.colour)
    return Scene(image, placement, distractors)


def cell_coverage(shape: str, placement: Placement) -> np.ndarray:
    """`(GRID_SIDE, GRID_SIDE)` share of each 32 x 32 cell's pixels that the shape fills, rasterised as drawn."""
    mask = Image.new("L", (IMAGE_SIDE, IMAGE_SIDE), 0)
    draw_shape(ImageDraw.Draw(mask), shape, placement.left, placement.top, placement.side, 255)
    pixels = np.asarray(mask, dtype=np.float64) / 255  # (height, width)
    return pixels.reshape(GRID_SIDE, CELL_SIDE, GRID_SIDE, CELL_SIDE).mean(axis=(1, 3))  # (rows, columns)


def figure_cells(figure_type: str, placement: Placement) -> list[int]:
    """Row-major indices of the 7 x 7 cells the type's figure covers (at least `MIN_CELL_COVERAGE` of a cell)."""
    coverage = cell_coverage(FIGURES[figure_type].shape, placement)  # (rows, columns)
    return [int(index) for index in np.flatnonzero(coverage.ravel() >= MIN_CELL_COVERAGE)]


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


# --- corpus ------------------------------------------------------------------------------------


def generate_split(rng: np.random.Generator, split: str, count: int) -> list[DemoTweet]:
    """``count`` tweets, a shuffled mix with ``IMAGE_DECIDED_FRACTION`` of them image-decided."""
    num_image_decided = round(IMAGE_DECIDED_FRACTION * count)
    decided_by_image = rng.permutation(count) < num_image_decided
    deck = iter(image_decided_deck(rng, num_image_decided))
    prefix = Path(SPLIT_FILES[split]).stem
    tweets = []
    for index, flag in enumerate(decided_by_image):
        image_id = f"{prefix}_{index:04d}"
        tweets.append(image_decided_tweet(image_id, *next(deck)) if flag else text_decided_tweet(rng, image_id))
    return tweets


def corpus_text(tweets: list[DemoTweet]) -> str:
    blocks = [
        "\n".join(
            [IMAGE_ID_PREFIX + tweet.image_id]
            + [f"{token}\t{tag}" for token, tag in zip(tweet.tokens, tweet.tags, strict=True)]
        )
        for tweet in tweets
    ]
    return "\n\n".join(blocks) + "\n"


def sidecar_entries(tweets: list[DemoTweet], placements: list[Placement]) -> list[dict]:
    """One entry per image-decided entity: the tweet's index in its split, its image id, the token span and type, and
    the 7 x 7 cells (row-major) its image's figure covers, from the figure's placement in each tweet's image."""
    return [
        {
            "index": index,
            "image_id": tweet.image_id,
            "start": start,
            "end": end,
            "type": kind,
            "figure_cells": figure_cells(kind, placement),
        }
        for index, (tweet, placement) in enumerate(zip(tweets, placements, strict=True))
        if tweet.image_decided
        for start, end, kind in [tweet.image_decided]
    ]


def image_decided_scores(predictions: list[list[str]], entries: list[dict]) -> dict[str, float]:
    """Entity precision, recall and F1 on a split's image-decided entities (span and type must match).

    Args:
        predictions: the predicted tag sequences of the whole split, in file order.
        entries: the split's list from ``image_decided.json``. The image-decided entity is the only entity of its
            tweet, so every entity predicted in these tweets is scored against it (conlleval chunking).
    """
    gold = {(entry["index"], entry["type"], entry["start"], entry["end"] - 1) for entry in entries}
    predicted = {(entry["index"], *entity) for entry in entries for entity in get_entities(predictions[entry["index"]])}
    correct = len(gold & predicted)
    precision = correct / len(predicted) if predicted else 0.0
    recall = correct / len(gold) if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if correct else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "num_gold_entities": len(gold)}


def check_sizes(**counts: int) -> None:
    for name, count in counts.items():
        if count < 1:
            raise ValueError(f"{name} must be positive, got {count}")


def write_demo_corpus(
    output_dir: str | Path,
    seed: int = 0,
    num_train: int = SPLIT_SIZES["train"],
    num_valid: int = SPLIT_SIZES["validation"],
    num_test: int = SPLIT_SIZES["test"],
) -> Path:
    """Write the demo corpus (text files, ``images/``, ``image_decided.json``) into ``output_dir``; return it.

    Each split draws from its own generator seeded by ``(seed, split number)``, so one split's size does not
    change another's tweets. Existing files of the same names are overwritten.
    """
    check_sizes(num_train=num_train, num_valid=num_valid, num_test=num_test)
    sizes = {"train": num_train, "validation": num_valid, "test": num_test}
    output_dir = Path(output_dir)
    image_dir = output_dir / IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    sidecar = {}
    for number, (split, count) in enumerate(sizes.items()):
        rng = np.random.default_rng([seed, number])
        tweets = generate_split(rng, split, count)
        write_text(output_dir / SPLIT_FILES[split], corpus_text(tweets))
        placements = []
        for tweet in tweets:
            image, placement = draw_image_and_figure(rng, tweet.figure_type)
            write_bytes(image_dir / (tweet.image_id + IMAGE_SUFFIX), jpeg_bytes(image))
            placements.append(placement)
        sidecar[split] = sidecar_entries(tweets, placements)
    write_text(output_dir / SIDECAR_FILE, json.dumps(sidecar, indent=1) + "\n")
    return output_dir


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Write the seeded demo corpus: tweets, images and image_decided.json.")
    parser.add_argument("--output_dir", required=True, help="Folder for train/valid/test.txt, images/ and the sidecar.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of every text and image choice.")
    parser.add_argument("--num_train", type=int, default=SPLIT_SIZES["train"], help="Training tweets.")
    parser.add_argument("--num_valid", type=int, default=SPLIT_SIZES["validation"], help="Validation tweets.")
    parser.add_argument("--num_test", type=int, default=SPLIT_SIZES["test"], help="Test tweets.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    output_dir = write_demo_corpus(args.output_dir, args.seed, args.num_train, args.num_valid, args.num_test)
    logger.info("wrote %s", output_dir)


if __name__ == "__main__":
    main()
