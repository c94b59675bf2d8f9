"""Twitter-2015 / Twitter-2017 multimodal NER corpora as a `datasets` dataset.

The corpora ship in the layout every multimodal NER repository uses::

    <data_dir>/{train,valid,test}.txt   an ``IMGID:<id>`` line, ``token<TAB>tag`` lines, a blank line between tweets
    <image_dir>/<id>.jpg

`datasets` 4+ runs no loading scripts, so this module turns the raw files into a `DatasetDict`, writes a
Hub-ready Parquet folder that ``datasets.load_dataset(folder)`` loads, and caches the model's image features
(VGG-16 pool5, ResNet-152 layer4 or CLIP ViT-B/32 patch tokens) as a dataset column so that training never runs
the image backbone.

Export the corpus (``--push_to_hub`` is the only step that needs the network)::

    python dataset_script/twitter_mner.py --data_dir D [--image_dir I] --output_dir O \
        [--label_map OTHER=MISC] [--push_to_hub REPO]

Cache the image features of an exported dataset::

    python dataset_script/twitter_mner.py cache-features --dataset O --model M --output_dir F
"""

import argparse
import hashlib
import io
import json
import logging
import math
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

import datasets
import torch
from datasets import Array2D, ClassLabel, Dataset, DatasetDict, DatasetInfo, Features, List, SplitDict, SplitInfo, Value
from datasets.fingerprint import Hasher
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData, HfApi
from PIL import ExifTags, Image
from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import IOB2, Entities
from tqdm.auto import tqdm

from acn_commands.atomic import atomic_folder, atomic_path
from modeling_acn.configuration_acn import VISION_BACKBONES, VISION_PRECISIONS
from modeling_acn.image_processing_acn import MAX_IMAGE_PIXELS, AcnImageError, load_image_file, upright_rgb

logger = logging.getLogger(__name__)

SPLIT_FILES = {"train": "train.txt", "validation": "valid.txt", "test": "test.txt"}
IMAGE_ID_PREFIX = "IMGID:"
IMAGE_SUFFIX = ".jpg"
OUTSIDE_TAG = "O"
TAG_PATTERN = re.compile(r"(?P<prefix>[BI])-(?P<type>\w+)")
TYPE_PATTERN = re.compile(r"\w+")
MAX_SHARD_BYTES = 500 * 2**20  # push_to_hub's default shard size
# Written beside cached features: the backbone that computed them (any backbone, despite the historical name), its
# metadata naming the backbone, the effective precision and the int8 calibration.
VISION_WEIGHTS_FILE = "vgg16_trunk.safetensors"
FEATURE_CACHE_VERSION = 2  # bump when the stored features change meaning, to invalidate old caches
CALIBRATION_IMAGES = 16  # the first training images with a picture calibrate an int8 backbone
CACHE_COMMAND = "cache-features"

CITATION = """\
@inproceedings{zhang2018adaptive,
  title     = {Adaptive Co-Attention Network for Named Entity Recognition in Tweets},
  author    = {Zhang, Qi and Fu, Jinlan and Liu, Xiaoyu and Huang, Xuanjing},
  booktitle = {Proceedings of the AAAI Conference on Artificial Intelligence},
  pages     = {5674--5681},
  year      = {2018}
}

@inproceedings{lu2018visual,
  title     = {Visual Attention Model for Name Tagging in Multimodal Social Media},
  author    = {Lu, Di and Neves, Leonardo and Carvalho, Vitor and Zhang, Ning and Ji, Heng},
  booktitle = {Proceedings of the 56th Annual Meeting of the Association for Computational Linguistics},
  pages     = {1990--1999},
  year      = {2018}
}"""


class CorpusFormatError(ValueError):
    """A corpus file that does not follow the ``IMGID`` / ``token<TAB>tag`` format; the message starts with ``file:line``."""


class ImageProblem(str, Enum):
    """Why a tweet has no image (the ``image_problem`` column holds the value)."""

    NOT_REQUESTED = "no image_dir"
    OUTSIDE_IMAGE_DIR = "outside image_dir"
    MISSING = "missing file"
    NOT_A_FILE = "not a regular file"
    EMPTY = "empty file"
    CORRUPT = "corrupt"
    TOO_LARGE = "too large"
    UNSUPPORTED_MODE = "unsupported mode"
    TIMED_OUT = "timed out"


@dataclass(frozen=True)
class Tweet:
    """One tweet of a corpus file; token ``i`` sits on line ``line + 1 + i`` of ``path``."""

    image_id: str
    tokens: list[str]
    tags: list[str]
    path: Path
    line: int

    def token_location(self, index: int) -> str:
        return f"{self.path}:{self.line + 1 + index}"


@dataclass(frozen=True)
class LoadedImage:
    """An image ready for `datasets.Image` (``{"bytes", "path"}``), or the reason there is none."""

    image: dict | None
    problem: ImageProblem | None


# --- parsing -----------------------------------------------------------------------------------


def decode_text(path: Path, error_type: type[ValueError] = ValueError) -> str:
    """A file's text: UTF-8 with a leading byte-order mark dropped; bytes that are not UTF-8 raise `error_type`
    naming ``file:line``. Every text input (corpus, JSONL, CSV) is read through here."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise error_type(f"{path}:{line}: byte {data[error.start]:#04x} is not valid UTF-8") from None
    return text.removeprefix("\ufeff")


def decode_lines(path: Path) -> list[str]:
    """The file's lines as text; raises on an empty file or bytes that are not UTF-8."""
    text = decode_text(path, CorpusFormatError)
    if not text.strip():
        raise CorpusFormatError(f"{path}:1: file is empty")
    # split on "\n" only: str.splitlines() would also break tokens at U+2028 and other separators
    return [line.rstrip("\r") for line in text.split("\n")]


def split_blocks(lines: list[str]):
    """Yield ``(first_line_number, lines)`` for each run of non-blank lines (one tweet each)."""
    block, start = [], 0
    for number, line in enumerate(lines, start=1):
        if line.strip():
            start = start if block else number
            block.append(line)
        elif block:
            yield start, block
            block = []
    if block:
        yield start, block


def parse_image_id(location: str, header: str) -> str:
    if not header.startswith(IMAGE_ID_PREFIX):
        raise CorpusFormatError(f"{location}: a tweet must start with an 'IMGID:<id>' line, got {header!r}")
    image_id = header[len(IMAGE_ID_PREFIX) :].strip().removesuffix(IMAGE_SUFFIX)
    if not image_id:
        raise CorpusFormatError(f"{location}: 'IMGID:' has no image id")
    return image_id


def parse_token_line(location: str, line: str) -> tuple[str, str]:
    token, tab, tag = line.partition("\t")
    if not tab:
        raise CorpusFormatError(f"{location}: expected 'token<TAB>tag', got {line!r} (no tab)")
    if not token:
        raise CorpusFormatError(f"{location}: empty token in {line!r}")
    tag = tag.strip()
    if tag != OUTSIDE_TAG and not TAG_PATTERN.fullmatch(tag):
        raise CorpusFormatError(f"{location}: tag {tag!r} is not 'O', 'B-TYPE' or 'I-TYPE'")
    return token, tag


def parse_tweet(path: Path, start: int, block: list[str]) -> Tweet:
    image_id = parse_image_id(f"{path}:{start}", block[0])
    if len(block) == 1:
        raise CorpusFormatError(f"{path}:{start}: tweet {image_id!r} has no tokens")
    pairs = [parse_token_line(f"{path}:{start + 1 + i}", line) for i, line in enumerate(block[1:])]
    tokens, tags = (list(column) for column in zip(*pairs))
    return Tweet(image_id=image_id, tokens=tokens, tags=tags, path=path, line=start)


def read_split_file(path: Path) -> list[Tweet]:
    """Parse one ``{train,valid,test}.txt`` file; errors name ``file:line`` and what is wrong."""
    return [parse_tweet(path, start, block) for start, block in split_blocks(decode_lines(path))]


def read_corpus(data_dir: Path) -> dict[str, list[Tweet]]:
    if not data_dir.is_dir():
        raise ValueError(f"data_dir {str(data_dir)!r} is not a directory")
    missing = [name for name in SPLIT_FILES.values() if not (data_dir / name).is_file()]
    if missing:
        raise ValueError(f"data_dir {str(data_dir)!r} lacks {', '.join(missing)}")
    return {split: read_split_file(data_dir / name) for split, name in SPLIT_FILES.items()}


# --- labels ------------------------------------------------------------------------------------


def parse_label_map(pairs: list[str]) -> dict[str, str]:
    """``["OTHER=MISC"]`` -> ``{"OTHER": "MISC"}``."""
    label_map = {}
    for pair in pairs:
        old, equals, new = pair.partition("=")
        if not equals or not TYPE_PATTERN.fullmatch(old) or not TYPE_PATTERN.fullmatch(new):
            raise ValueError(f"label_map entries must look like OLD=NEW (entity types), got {pair!r}")
        label_map[old] = new
    return label_map


def entity_type(tag: str) -> str:
    return tag[2:]


def rename_tag(tag: str, label_map: dict[str, str]) -> str:
    if tag == OUTSIDE_TAG:
        return tag
    return f"{tag[:2]}{label_map.get(entity_type(tag), entity_type(tag))}"


def corpus_types(tweets: list[Tweet]) -> set[str]:
    return {entity_type(tag) for tweet in tweets for tag in tweet.tags if tag != OUTSIDE_TAG}


def rename_types(corpus: dict[str, list[Tweet]], label_map: dict[str, str]) -> dict[str, list[Tweet]]:
    """Apply ``label_map`` to every split; each renamed type must occur in the training split."""
    train_types = corpus_types(corpus["train"])
    for old in label_map:
        if old not in train_types:
            raise ValueError(
                f"label_map renames {old!r}, which is not a type of the training split ({', '.join(sorted(train_types))})"
            )
    return {
        split: [replace(tweet, tags=[rename_tag(tag, label_map) for tag in tweet.tags]) for tweet in tweets]
        for split, tweets in corpus.items()
    }


def training_label_names(train: list[Tweet]) -> list[str]:
    """``O`` first, then ``B-``/``I-`` of each training type, types sorted: deterministic ids."""
    return [OUTSIDE_TAG] + [f"{prefix}-{name}" for name in sorted(corpus_types(train)) for prefix in "BI"]


def check_tags_known(split: str, tweets: list[Tweet], label_names: list[str]) -> None:
    known = set(label_names)
    for tweet in tweets:
        for index, tag in enumerate(tweet.tags):
            if tag not in known:
                raise CorpusFormatError(
                    f"{tweet.token_location(index)}: {split} tag {tag!r} does not occur in the training split "
                    f"(labels: {', '.join(label_names)})"
                )


# --- images ------------------------------------------------------------------------------------


def image_path(image_dir: Path, image_id: str) -> Path | None:
    """``<image_dir>/<image_id>.jpg``, or None when the id is not a plain file name and could leave image_dir."""
    name = image_id + IMAGE_SUFFIX
    if "\x00" in name or Path(name).name != name:
        return None
    return image_dir / name


def normalise_image(image: Image.Image, data: bytes) -> tuple[bytes, str]:
    """Upright, single-frame RGB bytes and their extension; the original bytes when they already are that."""
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    if image.format == "JPEG" and image.mode == "RGB" and orientation == 1:
        return data, "jpg"
    # the processor's conversion (16-bit scaled, alpha over white), on the first frame of an animation
    buffer = io.BytesIO()
    upright_rgb(image).save(buffer, format="PNG")  # lossless: these are few, the model resizes anyway
    return buffer.getvalue(), "png"


def read_image(image_dir: Path, image_id: str, max_pixels: int = MAX_IMAGE_PIXELS) -> LoadedImage:
    """Load ``<image_dir>/<image_id>.jpg`` for `datasets.Image`, or say why it cannot be used."""
    path = image_path(image_dir, image_id)
    if path is None:
        return LoadedImage(None, ImageProblem.OUTSIDE_IMAGE_DIR)
    try:
        image, data = load_image_file(path, max_pixels)
    except AcnImageError as error:
        logger.debug("%s", error)
        return LoadedImage(None, ImageProblem(error.reason))
    encoded, extension = normalise_image(image, data)
    return LoadedImage({"bytes": encoded, "path": f"{image_id}.{extension}"}, None)


def read_split_images(tweets: list[Tweet], image_dir: Path | None, max_pixels: int, split: str) -> list[LoadedImage]:
    if image_dir is None:
        return [LoadedImage(None, ImageProblem.NOT_REQUESTED)] * len(tweets)
    return [read_image(image_dir, tweet.image_id, max_pixels) for tweet in tqdm(tweets, desc=f"{split} images")]


# --- dataset -----------------------------------------------------------------------------------


def twitter_mner_features(label_names: list[str]) -> Features:
    return Features(
        {
            "id": Value("string"),
            "image_id": Value("string"),
            "tokens": List(Value("string")),
            "ner_tags": List(ClassLabel(names=label_names)),
            "image": datasets.Image(),
            "image_problem": Value("string"),
        }
    )


def build_split(tweets: list[Tweet], images: list[LoadedImage], features: Features, split: str) -> Dataset:
    columns = {
        "id": [str(index) for index in range(len(tweets))],
        "image_id": [tweet.image_id for tweet in tweets],
        "tokens": [tweet.tokens for tweet in tweets],
        "ner_tags": [tweet.tags for tweet in tweets],
        "image": [loaded.image for loaded in images],
        "image_problem": [loaded.problem.value if loaded.problem else None for loaded in images],
    }
    return Dataset.from_dict(columns, features=features, split=split)


def load_twitter_mner(
    data_dir: str | Path,
    image_dir: str | Path | None = None,
    *,
    label_map: dict[str, str] | None = None,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
) -> DatasetDict:
    """Read a Twitter-2015/2017 corpus into splits ``train``/``validation``/``test``.

    Features: ``id`` (index in the split), ``image_id``, ``tokens``, ``ner_tags`` (`ClassLabel` over the
    training split's tags, ``O`` first), ``image`` (`datasets.Image`, upright RGB, None when unavailable)
    and ``image_problem`` (an `ImageProblem` value, None when the image loaded).

    Args:
        data_dir: folder with ``train.txt``, ``valid.txt`` and ``test.txt``.
        image_dir: folder with ``<image_id>.jpg``; None builds a text-only dataset.
        label_map: entity-type renames, e.g. ``{"OTHER": "MISC"}``.
        max_image_pixels: larger images are recorded as ``too large`` instead of decoded.
    """
    if max_image_pixels < 1:
        raise ValueError(f"max_image_pixels must be positive, got {max_image_pixels}")
    if image_dir is not None and not Path(image_dir).is_dir():
        raise ValueError(f"image_dir {str(image_dir)!r} is not a directory")
    corpus = rename_types(read_corpus(Path(data_dir)), label_map or {})
    label_names = training_label_names(corpus["train"])
    for split, tweets in corpus.items():
        check_tags_known(split, tweets, label_names)
    features = twitter_mner_features(label_names)
    image_root = None if image_dir is None else Path(image_dir)
    return DatasetDict(
        {
            split: build_split(tweets, read_split_images(tweets, image_root, max_image_pixels, split), features, split)
            for split, tweets in corpus.items()
        }
    )


# --- statistics --------------------------------------------------------------------------------


def tag_sequences(dataset: Dataset) -> list[list[str]]:
    names = dataset.features["ner_tags"].feature.names
    return [[names[tag] for tag in tags] for tags in dataset["ner_tags"]]


def count_lenient_entities(sequences: list[list[str]]) -> Counter:
    """conlleval chunking (seqeval's default): an ``I-X`` after ``O`` or another type starts an entity."""
    return Counter(name for tags in sequences for name, _, _ in get_entities(tags))


def count_strict_entities(sequences: list[list[str]]) -> Counter:
    """Strict IOB2 (seqeval ``mode="strict"``): only ``B-X`` starts an entity, orphan ``I-`` tags are dropped."""
    entities = Entities(sequences, IOB2, suffix=False).entities
    return Counter(entity.tag for sentence in entities for entity in sentence)


def count_orphan_inside_tags(sequences: list[list[str]]) -> Counter:
    """``I-X`` tags that continue no ``X`` entity: after ``O`` (or first in a tweet), or after another type."""
    counts = Counter()
    for tags in sequences:
        for previous, tag in zip([OUTSIDE_TAG] + tags, tags):
            if not tag.startswith("I-") or entity_type(previous) == entity_type(tag):
                continue
            counts["after O" if previous == OUTSIDE_TAG else "after another type"] += 1
    return counts


# --- dataset card ------------------------------------------------------------------------------


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def splits_section(dataset: DatasetDict) -> str:
    rows = [
        [split, part.num_rows, sum(map(len, part["tokens"])), sum(problem is None for problem in part["image_problem"])]
        for split, part in dataset.items()
    ]
    return "## Splits\n\n" + markdown_table(["split", "tweets", "tokens", "images"], rows)


def entity_count_table(dataset: DatasetDict) -> str:
    sequences = {split: tag_sequences(part) for split, part in dataset.items()}
    counts = [count(seqs) for seqs in sequences.values() for count in (count_lenient_entities, count_strict_entities)]
    names = sorted(set().union(*counts))
    header = ["type"] + [f"{split} {mode}" for split in dataset for mode in ("lenient", "strict")]
    rows = [[name] + [count[name] for count in counts] for name in names]
    rows.append(["total"] + [sum(count.values()) for count in counts])
    return markdown_table(header, rows)


def orphan_tag_table(dataset: DatasetDict) -> str:
    counts = {split: count_orphan_inside_tags(tag_sequences(part)) for split, part in dataset.items()}
    rows = [[kind] + [count[kind] for count in counts.values()] for kind in ("after O", "after another type")]
    return markdown_table(["I-X tag"] + list(dataset), rows)


def entities_section(dataset: DatasetDict) -> str:
    return (
        "## Entities\n\n"
        "*Lenient* is conlleval chunking (seqeval's default): an `I-X` that follows `O` or another type starts "
        "an entity. *Strict* is IOB2 (seqeval `mode=\"strict\"`): only `B-X` starts one.\n\n"
        f"{entity_count_table(dataset)}\n\n"
        "`I-X` tags that continue no `X` entity are kept as annotated (\"after O\" includes a tweet's first tag):\n\n"
        f"{orphan_tag_table(dataset)}"
    )


def image_problem_table(dataset: DatasetDict) -> str:
    counts = {split: Counter(part["image_problem"]) for split, part in dataset.items()}
    rows = [["loaded"] + [count[None] for count in counts.values()]]
    for problem in ImageProblem:
        row = [count[problem.value] for count in counts.values()]
        if any(row):
            rows.append([problem.value] + row)
    return markdown_table(["image"] + list(dataset), rows)


def images_section(dataset: DatasetDict) -> str:
    return (
        "## Images\n\n"
        "Images are stored upright (EXIF orientation applied) and in RGB; RGB JPEGs keep their original bytes, "
        "anything else (alpha over white, CMYK, grayscale, 16-bit scaled to 8 bits, palette, the first frame of an animation) is "
        "re-encoded as PNG. A tweet without an image keeps its text, has `image = None` and the reason in "
        "`image_problem`; the model masks its image out. No substitute picture is used.\n\n"
        f"{image_problem_table(dataset)}"
    )


def features_section(dataset: DatasetDict) -> str:
    label_names = dataset["train"].features["ner_tags"].feature.names
    rows = [
        ["`id`", "string", "index of the tweet in its split"],
        ["`image_id`", "string", "the corpus's `IMGID`; the image file is `<image_id>.jpg`"],
        ["`tokens`", "list of string", "the tweet's tokens"],
        ["`ner_tags`", "list of ClassLabel", ", ".join(f"{i}: `{name}`" for i, name in enumerate(label_names))],
        ["`image`", "Image", "the tweet's image, None when unavailable"],
        ["`image_problem`", "string", "why `image` is None: " + ", ".join(f"`{p.value}`" for p in ImageProblem)],
    ]
    return "## Features\n\n" + markdown_table(["feature", "type", "description"], rows)


def card_body(dataset: DatasetDict, source: str) -> str:
    sections = [
        "# Twitter multimodal NER",
        f"Tweets with their images and BIO named-entity tags, converted from `{source}` by "
        "`dataset_script/twitter_mner.py`. Twitter-2015 was introduced by Zhang et al. (2018), Twitter-2017 by "
        "Lu et al. (2018).",
        features_section(dataset),
        splits_section(dataset),
        entities_section(dataset),
        images_section(dataset),
        f"## Citation\n\n```bibtex\n{CITATION}\n```",
    ]
    return "\n\n".join(sections) + "\n"


def dataset_card(dataset: DatasetDict, shards: dict[str, list[Path]], source: str) -> DatasetCard:
    """A card whose YAML holds ``configs`` (the shard globs) and ``dataset_info`` (features, split sizes)."""
    splits = SplitDict()
    for split, part in dataset.items():
        splits.add(SplitInfo(name=split, num_bytes=part.data.nbytes, num_examples=part.num_rows))
    download_size = sum(path.stat().st_size for paths in shards.values() for path in paths)
    info = DatasetInfo(
        features=dataset["train"].features,
        splits=splits,
        download_size=download_size,
        dataset_size=sum(split.num_bytes for split in splits.values()),
    )
    card_data = DatasetCardData(
        language=["en"],
        task_categories=["token-classification"],
        task_ids=["named-entity-recognition"],
        pretty_name="Twitter multimodal NER",
    )
    DatasetInfosDict({"default": info}).to_dataset_card_data(card_data)
    data_files = [{"split": split, "path": f"data/{split}-*-of-*.parquet"} for split in dataset]
    MetadataConfigs({"default": {"data_files": data_files}}).to_dataset_card_data(card_data)
    return DatasetCard(f"---\n{card_data.to_yaml()}\n---\n\n{card_body(dataset, source)}")


# --- Parquet export ----------------------------------------------------------------------------


def shard_pattern(splits) -> re.Pattern:
    """The names `write_split_shards` gives; the only files of ``data/`` an export replaces or removes."""
    return re.compile(rf"(?:{'|'.join(map(re.escape, splits))})-\d{{5}}-of-\d{{5}}\.parquet")


def prepare_output_dir(output_dir: Path, splits, overwrite: bool) -> list[Path]:
    """Check that the export may write into `output_dir`; return the shards of an earlier export to remove.

    Only files named like this exporter's shards are removed (stale ones would match the card's globs); anything
    else in the folder, in ``data/`` included, is left as it is.
    """
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise ValueError(f"output_dir {str(output_dir)!r} is not empty; pass overwrite=True to replace its data")
    data_dir = output_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    pattern = shard_pattern(splits)
    return [path for path in data_dir.iterdir() if path.is_file() and pattern.fullmatch(path.name)]


def write_split_shards(part: Dataset, data_dir: Path, split: str) -> list[Path]:
    num_shards = max(1, math.ceil(part.data.nbytes / MAX_SHARD_BYTES))
    paths = []
    for index in range(num_shards):
        path = data_dir / f"{split}-{index:05d}-of-{num_shards:05d}.parquet"
        with atomic_path(path) as temporary:
            part.shard(num_shards, index, contiguous=True).to_parquet(temporary)
        paths.append(path)
    return paths


def export_parquet(dataset: DatasetDict, output_dir: str | Path, *, source: str, overwrite: bool = False) -> Path:
    """Write ``data/<split>-NNNNN-of-NNNNN.parquet`` (images embedded) and ``README.md``; return the card path.

    Every file is written under a temporary name and renamed into place; with `overwrite`, the shards of an
    earlier export that this one does not rewrite are removed, and no other file.
    """
    output_dir = Path(output_dir)
    earlier = prepare_output_dir(output_dir, dataset.keys(), overwrite)
    shards = {split: write_split_shards(part, output_dir / "data", split) for split, part in dataset.items()}
    written = {path for paths in shards.values() for path in paths}
    for path in earlier:
        if path not in written:
            path.unlink()
    card_path = output_dir / "README.md"
    with atomic_path(card_path) as temporary:
        dataset_card(dataset, shards, source).save(temporary)
    return card_path


def push_folder_to_hub(output_dir: Path, repo_id: str) -> None:
    """Upload the exported folder as it is; remote shards of an earlier export are deleted first."""
    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
    api.upload_folder(
        folder_path=output_dir,
        repo_id=repo_id,
        repo_type="dataset",
        delete_patterns=["data/*"],
        commit_message="Export with dataset_script/twitter_mner.py",
    )


# --- image feature cache -----------------------------------------------------------------------


def state_dict_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def vision_trunk(model: torch.nn.Module) -> torch.nn.Module:
    """The part of an ACN model that computes image features (any other model: all of it)."""
    for name in ("acn.vision", "vision"):
        try:
            return model.get_submodule(name)
        except AttributeError:
            continue
    return model


def vision_settings(model: torch.nn.Module) -> dict:
    """What, beside the weights, decides the features: backbone, effective precision (on the model's device, not
    the configured one) and int8 calibration. Models without an ACN config (tests' stand-ins) have none."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "effective_vision_precision"):
        return {}
    precision = model.effective_vision_precision(next(model.parameters()).device)
    return {"vision_backbone": config.vision_backbone, "vision_precision": precision,
            "vision_int8_ranges": config.vision_int8_ranges if precision == "int8" else None}  # fmt: skip


def read_vision_settings(path: Path) -> dict:
    """The backbone, precision and int8 ranges recorded in a `cache-features` weights file ({} without one)."""
    from safetensors import safe_open

    if not Path(path).is_file():
        return {}
    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata() or {}
    return {key: json.loads(value) if key == "vision_int8_ranges" else value for key, value in metadata.items()}


def image_features_fingerprint(dataset: Dataset, model: torch.nn.Module, image_processor) -> str:
    """Same dataset, backbone weights, effective precision and calibration, and processor settings -> same
    fingerprint -> datasets reuses the cache file. A model trained on top of a backbone keeps that backbone's cache."""
    parts = [FEATURE_CACHE_VERSION, dataset._fingerprint, state_dict_digest(vision_trunk(model)), vision_settings(model),
             image_processor.to_dict()]  # fmt: skip
    return Hasher.hash(parts)


def features_shape(model: torch.nn.Module) -> tuple[int, int]:
    """(regions, channels) of the model's image features; VGG-16 pool5's for models without an ACN config."""
    config = getattr(model, "config", None)
    return (config.num_image_regions, config.image_feature_dim) if config is not None else (49, 512)


class PoolFeatureBatch:
    """`Dataset.map` function: a batch of images (None allowed) -> pool5 features and image mask."""

    def __init__(self, model: torch.nn.Module, image_processor):
        self.model = model
        self.image_processor = image_processor
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype  # half-precision models get half-precision pixels
        self.shape = features_shape(model)
        self.num_images = 0

    @torch.inference_mode()
    def __call__(self, images: list) -> dict:
        inputs = self.image_processor(images=images, return_tensors="pt")
        image_mask = inputs["image_mask"].bool()  # (batch,)
        features = torch.zeros(len(images), *self.shape, dtype=torch.float16)  # (batch, 49, channels)
        if image_mask.any():
            pixel_values = inputs["pixel_values"][image_mask].to(self.device, self.dtype)  # (images, 3, 224, 224)
            pooled = self.model.get_image_features(pixel_values)  # (images, 49, channels)
            features[image_mask] = pooled.to("cpu", torch.float16)
        self.num_images += int(image_mask.sum())
        return {"image_features": features.numpy(), "image_mask": image_mask.numpy()}


def cache_image_features(
    dataset: Dataset,
    model: torch.nn.Module,
    image_processor,
    *,
    batch_size: int = 32,
    cache_dir: str | Path | None = None,
) -> Dataset:
    """Add ``image_features`` (float16, ``(49, channels)`` backbone regions, zeros without an image) and ``image_mask``.

    Runs ``image_processor`` and ``model.get_image_features`` once per image through a batched
    `Dataset.map`; the result is an Arrow file in ``cache_dir`` named by the dataset's fingerprint, the
    weights' hash and the processor's settings, so a second call with the same inputs is a cache hit.

    Args:
        dataset: a split with an ``image`` column.
        model: exposes ``get_image_features(pixel_values) -> (batch, 49, channels)``; put it on its device first.
        image_processor: ``image_processor(images=..., return_tensors="pt")`` gives ``pixel_values`` and
            ``image_mask``; ``to_dict()`` gives its settings.
        batch_size: images per forward pass.
        cache_dir: where the Arrow files go; defaults to ``<HF_DATASETS_CACHE>/acn_image_features``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if "image" not in dataset.column_names:
        raise ValueError(f"dataset has no 'image' column, only {dataset.column_names}")
    cache_dir = Path(cache_dir or Path(datasets.config.HF_DATASETS_CACHE) / "acn_image_features")
    cache_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = image_features_fingerprint(dataset, model, image_processor)
    features = dataset.features.copy()
    features["image_features"] = Array2D(shape=features_shape(model), dtype="float16")
    features["image_mask"] = Value("bool")
    cache_file = cache_dir / f"image-features-{fingerprint}.arrow"
    cache_hit = cache_file.is_file() and datasets.is_caching_enabled()
    extract = PoolFeatureBatch(model, image_processor)
    start = time.perf_counter()
    cached = dataset.map(
        extract,
        input_columns="image",
        batched=True,
        batch_size=batch_size,
        features=features,
        new_fingerprint=fingerprint,
        cache_file_name=str(cache_file),
        desc="image features",
    )
    seconds = time.perf_counter() - start
    if cache_hit:
        logger.info("image features: cache hit %s (%.1f s)", cache_file, seconds)
    else:
        logger.info("image features: %d images in %.1f s (%.1f images/s)", extract.num_images, seconds,
                    extract.num_images / seconds)
    return cached


# --- command line ------------------------------------------------------------------------------


def parse_export_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Convert a Twitter-2015/2017 multimodal NER corpus into a Parquet dataset folder. "
        f"Run '{Path(__file__).name} {CACHE_COMMAND} --help' for the image feature cache."
    )
    parser.add_argument("--data_dir", required=True, help="Folder with train.txt, valid.txt and test.txt.")
    parser.add_argument("--image_dir", help="Folder with <IMGID>.jpg; without it the dataset is text only.")
    parser.add_argument("--output_dir", required=True, help="Folder for data/*.parquet and README.md.")
    parser.add_argument("--label_map", nargs="+", default=[], metavar="OLD=NEW", help="Rename entity types.")
    parser.add_argument("--max_image_pixels", type=int, default=MAX_IMAGE_PIXELS, help="Refuse larger images.")
    parser.add_argument("--overwrite", action="store_true", help="Replace the data of a non-empty output_dir.")
    parser.add_argument("--push_to_hub", metavar="REPO", help="Upload the folder to this Hub dataset repository.")
    return parser.parse_args(argv)


def parse_cache_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"{Path(__file__).name} {CACHE_COMMAND}",
        description="Store the model's image features as a dataset column (float16, 49 regions x the backbone's channels).",
    )
    parser.add_argument("--dataset", required=True, help="Exported folder or Hub id that load_dataset reads.")
    trunk = parser.add_mutually_exclusive_group(required=True)
    trunk.add_argument("--model", help="ACN checkpoint folder or Hub id whose image backbone and processor to use.")
    trunk.add_argument(
        "--vision_weights",
        help="Backbone without a checkpoint: 'imagenet' (the published weights: torchvision's, or CLIP's through "
        "transformers; cached or downloaded), a local .pth/.safetensors file, or 'random' (seeded by --seed; only for "
        "offline demos and tests).",
    )
    parser.add_argument("--vision_backbone", default="vgg16", choices=sorted(VISION_BACKBONES), help="Backbone with --vision_weights (a --model brings its own).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the 'random' trunk.")
    parser.add_argument("--vision_precision", choices=VISION_PRECISIONS, help="Precision of the backbone (AcnConfig.vision_precision); default: the checkpoint's, or auto.")
    parser.add_argument("--calibration_images", type=int, default=CALIBRATION_IMAGES, help="Training images that calibrate an int8 backbone (the first ones with a picture).")
    parser.add_argument("--output_dir", required=True, help="Where save_to_disk writes the dataset with features.")
    parser.add_argument("--batch_size", type=int, default=32, help="Images per forward pass.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="Torch device.")
    parser.add_argument("--cache_dir", help="Folder for datasets' Arrow files, loaded and computed (default: HF's).")
    return parser.parse_args(argv)


def run_export(args: argparse.Namespace) -> None:
    dataset = load_twitter_mner(
        args.data_dir,
        args.image_dir,
        label_map=parse_label_map(args.label_map),
        max_image_pixels=args.max_image_pixels,
    )
    card_path = export_parquet(dataset, args.output_dir, source=Path(args.data_dir).name, overwrite=args.overwrite)
    logger.info("tweets: %s", {split: part.num_rows for split, part in dataset.items()})
    logger.info("images per split:\n%s", image_problem_table(dataset))
    logger.info("wrote %s", card_path.parent)
    if args.push_to_hub:
        push_folder_to_hub(card_path.parent, args.push_to_hub)
        logger.info("pushed to https://huggingface.co/datasets/%s", args.push_to_hub)


def feature_extractor(args: argparse.Namespace):
    """The model whose trunk computes the features, and the image processor that prepares its input."""
    from modeling_acn import AcnConfig, AcnForTokenClassification, AcnImageProcessor, AcnModel

    precision = {"vision_precision": args.vision_precision} if args.vision_precision else {}
    if args.model:
        model = AcnForTokenClassification.from_pretrained(args.model, **precision)
        return model, AcnImageProcessor.from_pretrained(args.model)
    torch.manual_seed(args.seed)
    model = AcnModel(AcnConfig(vision_backbone=args.vision_backbone, **precision))
    if args.vision_weights != "random":
        model.load_vision_weights(None if args.vision_weights == "imagenet" else args.vision_weights)
    return model, AcnImageProcessor.for_backbone(args.vision_backbone)


def calibrate_if_needed(model, image_processor, train_split: Dataset, count: int, device) -> None:
    """Calibrate an int8 backbone on the first `count` training images with a picture (deterministic)."""
    if not model.needs_vision_calibration(device):
        return
    images = []
    for row in train_split.select_columns("image"):  # decodes only as many images as it needs
        if row["image"] is not None:
            images.append(row["image"])
        if len(images) == count:
            break
    if not images:
        raise ValueError("the int8 backbone needs training images to calibrate on; pass --vision_precision fp32")
    pixel_values = image_processor(images=images, return_tensors="pt")["pixel_values"].to(device)  # (count, 3, 224, 224)
    started = time.perf_counter()
    model.calibrate_vision(pixel_values)
    logger.info("int8 backbone calibrated on %d training images (%.1f s)", len(pixel_values), time.perf_counter() - started)


def check_features_output_dir(output_dir: Path, splits) -> None:
    """cache-features replaces its output folder as a whole: refuse one that holds anything it did not write."""
    if not output_dir.exists():
        return
    own = {"dataset_dict.json", VISION_WEIGHTS_FILE, *splits}
    foreign = sorted(path.name for path in output_dir.iterdir() if path.name not in own)
    if foreign:
        raise ValueError(
            f"output_dir {str(output_dir)!r} holds files cache-features did not write ({', '.join(foreign)}); "
            "choose a new folder"
        )


def run_cache_features(args: argparse.Namespace) -> None:
    from safetensors.torch import save_file

    model, image_processor = feature_extractor(args)
    model = model.to(args.device).eval()
    dataset = datasets.load_dataset(args.dataset, cache_dir=args.cache_dir)
    output_dir = Path(args.output_dir)
    check_features_output_dir(output_dir, dataset.keys())
    calibrate_if_needed(model, image_processor, dataset["train"], args.calibration_images, args.device)
    logger.info("image backbone: %s in %s", model.config.vision_backbone, model.effective_vision_precision(args.device))
    cached = DatasetDict(
        {
            split: cache_image_features(
                part, model, image_processor, batch_size=args.batch_size, cache_dir=args.cache_dir
            )
            for split, part in dataset.items()
        }
    )
    with atomic_folder(output_dir) as temporary:
        cached.save_to_disk(str(temporary))
        # the backbone beside the features: a model trained on them must see images through the same weights,
        # precision and calibration
        trunk = vision_trunk(model).state_dict()
        metadata = {key: json.dumps(value) if key == "vision_int8_ranges" else value for key, value in vision_settings(model).items() if value is not None}
        save_file({key: value.contiguous() for key, value in trunk.items()}, temporary / VISION_WEIGHTS_FILE, metadata=metadata)
    logger.info("wrote %s", output_dir)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if argv[:1] == [CACHE_COMMAND]:
        run_cache_features(parse_cache_args(argv[1:]))
    else:
        run_export(parse_export_args(argv))


if __name__ == "__main__":
    main()
