"""Twitter-2015 / Twitter-2017 multimodal NER corpora, and any corpus in their format, as a `datasets.DatasetDict`.

The corpora ship in the layout every multimodal NER repository uses::

    <data_dir>/{train,valid,test}.txt   an ``IMGID:<id>`` line, ``token<TAB>tag`` lines, a blank line between tweets
    <image_dir>/<id>.jpg

`datasets` 4+ runs no loading scripts, so `load_twitter_mner` reads the raw files itself; `acn_mner.parquet_export`
writes the result as a Hub-ready Parquet folder and `acn_mner.feature_cache` adds the model's image features.
"""

import io
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

import datasets
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value
from PIL import Image
from tqdm.auto import tqdm

from modeling_acn.image_processing_acn import (
    MAX_IMAGE_PIXELS,
    AcnImageError,
    exif_orientation,
    load_image_file,
    upright_rgb,
)

logger = logging.getLogger(__name__)

SPLIT_FILES = {"train": "train.txt", "validation": "valid.txt", "test": "test.txt"}
IMAGE_ID_PREFIX = "IMGID:"
IMAGE_SUFFIX = ".jpg"
OUTSIDE_TAG = "O"
TYPE_PATTERN = re.compile(r"(?![BI]-)\w+(?:-\w+)*")  # PER, OTHER, WNUT-17's creative-work; not B-PER, a tag
TAG_PATTERN = re.compile(rf"(?P<prefix>[BI])-(?P<type>{TYPE_PATTERN.pattern})")


class CorpusFormatError(ValueError):
    """A corpus file that does not follow the ``IMGID`` / ``token<TAB>tag`` format; the message starts with
    ``file:line``."""


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


def split_blocks(lines: list[str]) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(first_line_number, lines)`` for each run of non-blank lines (one tweet each)."""
    return numbered_blocks(enumerate(lines, start=1))


def numbered_blocks(lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, list[str]]]:
    """`split_blocks` of ``(line number, line)`` pairs."""
    block: list[str] = []
    start = 0
    for number, line in lines:
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
    tokens, tags = (list(column) for column in zip(*pairs, strict=True))
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
                f"label_map renames {old!r}, which is not a type of the training split "
                f"({', '.join(sorted(train_types))})"
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
    if image.format == "JPEG" and image.mode == "RGB" and exif_orientation(image) == 1:
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
    return [
        read_image(image_dir, tweet.image_id, max_pixels)
        for tweet in tqdm(tweets, desc=f"{split} images", disable=None)
    ]


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
