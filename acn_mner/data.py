"""Corpus loading shared by the training, evaluation and benchmark scripts (batches: `modeling_acn.AcnDataCollator`).

A corpus comes from a folder or a Hub id (`load_corpus`), or from one file per split (`load_corpus_files`: the
Twitter format, or JSON/CSV/Parquet with `tokens` and `ner_tags` columns as transformers' run_ner examples read
them). `standard_corpus` then gives every source one shape: `tokens`, and `ner_tags` as a `ClassLabel` of BIO tags.
"""

import ast
from collections.abc import Iterable, Sequence
from pathlib import Path

import datasets
from datasets import ClassLabel, DatasetDict, List

from modeling_acn.image_processing_acn import MAX_IMAGE_PIXELS

from .corpus import (
    OUTSIDE_TAG,
    TAG_PATTERN,
    build_split,
    check_tags_known,
    load_twitter_mner,
    read_split_file,
    read_split_images,
    training_label_names,
    twitter_mner_features,
)

SPLITS = ("train", "validation", "test")
TWITTER_SUFFIX = ".txt"  # `IMGID:` blocks of `token<TAB>tag` lines
TABLE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}  # datasets' builders
CORPUS_FILE_SUFFIXES = (TWITTER_SUFFIX, *TABLE_BUILDERS)
TEXT_COLUMN, LABEL_COLUMN = "tokens", "ner_tags"


def load_corpus(source: str, image_dir: str | None = None, config_name: str | None = None) -> datasets.DatasetDict:
    """A corpus as a `DatasetDict` with `train`/`validation`/`test`.

    `source` is the raw layout (`train.txt`, `valid.txt`, `test.txt`; images from `image_dir`), a folder written
    by `Dataset.save_to_disk` (e.g. with cached image features), a Parquet folder from the corpus loader, or a
    Hub dataset id; the last two go through `datasets.load_dataset(source, config_name)`.
    """
    path = Path(source)
    layout = (
        "raw corpus"
        if (path / "train.txt").is_file()
        else "save_to_disk"
        if (path / "dataset_dict.json").is_file()
        else None
    )
    if layout and config_name is not None:
        raise ValueError(
            f"dataset_config_name {config_name!r} selects a configuration of a Hub dataset or Parquet folder; {source} "
            f"is a {layout} folder"
        )
    if layout == "raw corpus":
        return load_twitter_mner(path, image_dir)
    if layout == "save_to_disk":
        return datasets.load_from_disk(str(path))
    return datasets.load_dataset(source, config_name)


def load_corpus_files(
    files: dict[str, str], image_dir: str | None = None, columns: Sequence[str] = (TEXT_COLUMN, LABEL_COLUMN)
) -> DatasetDict:
    """One file per split (`{"train": ..., "validation": ..., "test": ...}`), all in one format: the Twitter format
    (`.txt`; images `<id>.jpg` from `image_dir`), or JSON/JSON Lines/CSV/Parquet read by `datasets.load_dataset`.
    CSV cells of the `columns` (words, tags) hold lists, written as JSON or Python lists."""
    paths = {split: Path(name) for split, name in files.items()}
    suffixes = {path.suffix.lower() for path in paths.values()}
    if len(suffixes) != 1 or suffixes.pop() not in CORPUS_FILE_SUFFIXES:
        raise ValueError(
            f"corpus files must share one format of {', '.join(CORPUS_FILE_SUFFIXES)}, got "
            f"{', '.join(map(str, paths.values()))}"
        )
    for path in paths.values():
        if not path.is_file():
            raise ValueError(f"corpus file {path} does not exist")
    suffix = next(iter(paths.values())).suffix.lower()
    if suffix == TWITTER_SUFFIX:
        return load_twitter_files(paths, image_dir)
    if image_dir is not None:
        raise ValueError(f"image_dir reads <id>.jpg for Twitter-format (.txt) files, not for {suffix} files")
    builder = TABLE_BUILDERS[suffix]
    corpus = DatasetDict(
        {split: datasets.load_dataset(builder, data_files=str(path), split="train") for split, path in paths.items()}
    )
    if builder == "csv":
        corpus = DatasetDict({split: parse_list_cells(corpus[split], columns, paths[split]) for split in corpus})
    return corpus


def load_twitter_files(paths: dict[str, Path], image_dir: str | None) -> DatasetDict:
    """`corpus.load_twitter_mner` for split files of any name: the same features, label ids and checks."""
    tweets = {split: read_split_file(path) for split, path in paths.items()}
    names = training_label_names(tweets["train"])
    for split, split_tweets in tweets.items():
        check_tags_known(split, split_tweets, names)
    image_root = None if image_dir is None else Path(image_dir)
    if image_root is not None and not image_root.is_dir():
        raise ValueError(f"image_dir {str(image_dir)!r} is not a directory")
    features = twitter_mner_features(names)
    return DatasetDict(
        {
            split: build_split(
                split_tweets, read_split_images(split_tweets, image_root, MAX_IMAGE_PIXELS, split), features, split
            )
            for split, split_tweets in tweets.items()
        }
    )


def parse_list_cells(split: datasets.Dataset, columns: Sequence[str], path: Path) -> datasets.Dataset:
    """CSV has no lists: each cell of `columns` is a JSON or Python list literal (`["Obama", "visits"]`)."""

    def parse(column: str, row: int, cell: object) -> list:
        try:
            value = ast.literal_eval(cell) if isinstance(cell, str) else None
        except (ValueError, SyntaxError):
            value = None
        if not isinstance(value, list):
            raise ValueError(
                f'{path}: row {row + 1}, column {column!r}: expected a list such as ["Obama", "visits"], got {cell!r}'
            )
        return value

    for column in (column for column in columns if column in split.column_names):
        values = [parse(column, row, cell) for row, cell in enumerate(split[column])]
        split = split.remove_columns(column).add_column(column, values)
    return split


def standard_corpus(
    corpus: DatasetDict,
    origins: dict[str, str],
    text_column: str = TEXT_COLUMN,
    label_column: str = LABEL_COLUMN,
    known_labels: list[str] | None = None,
) -> DatasetDict:
    """The `train`/`validation`/`test` splits with the words in `tokens` and the tags in `ner_tags`, a `ClassLabel`
    of BIO tags, whatever the source. String tags are named by the training split (`O` first, then `B-`/`I-` of each
    type, sorted), as the Twitter loader does; integer tags need their names, from a `ClassLabel` feature or
    `known_labels` (a trained model's `id2label`, whose ids they are). `origins` names each split's source in errors.
    """
    missing = [split for split in SPLITS if split not in corpus]
    if missing:
        raise ValueError(
            f"{origins[missing[0]]} does not exist: the corpus has the splits {sorted(corpus)}; training needs train, "
            "validation and test"
        )
    corpus = DatasetDict({split: corpus[split] for split in SPLITS})
    for split in SPLITS:
        absent = [column for column in (text_column, label_column) if column not in corpus[split].column_names]
        if absent:
            raise ValueError(
                f"{origins[split]} has no column {absent[0]!r} (its columns: {', '.join(corpus[split].column_names)})"
            )
    renames = {old: new for old, new in ((text_column, TEXT_COLUMN), (label_column, LABEL_COLUMN)) if old != new}
    corpus = corpus.remove_columns(
        [new for new in renames.values() if new in corpus["train"].column_names]
    ).rename_columns(renames)
    words = corpus["train"].features[TEXT_COLUMN]
    if getattr(getattr(words, "feature", None), "dtype", None) not in ("string", "large_string"):
        raise ValueError(f"{origins['train']}: {text_column} must hold a list of words per tweet, got {words}")
    names = tag_names(corpus, origins, known_labels)
    for split in SPLITS:
        check_rows(corpus[split], names, origins[split])
    if not isinstance(corpus["train"].features[LABEL_COLUMN].feature, ClassLabel):
        corpus = corpus.cast_column(LABEL_COLUMN, List(ClassLabel(names=names)))
    return corpus


def tag_names(corpus: DatasetDict, origins: dict[str, str], known_labels: list[str] | None) -> list[str]:
    """The tag names, by id: the `ClassLabel`'s, those of the training split's string tags, or `known_labels`."""
    feature = corpus["train"].features[LABEL_COLUMN]
    inner = getattr(feature, "feature", None)
    dtype = getattr(inner, "dtype", "")
    if isinstance(inner, ClassLabel):
        for split in SPLITS[1:]:
            if getattr(corpus[split].features[LABEL_COLUMN], "feature", None) != inner:
                raise ValueError(
                    f"{origins[split]} names its tags otherwise than the training split ({', '.join(inner.names)})"
                )
        names = list(inner.names)
    elif dtype in ("string", "large_string"):
        tags = {tag for tags in corpus["train"][LABEL_COLUMN] for tag in tags}
        check_bio(tags, origins["train"])
        names = [OUTSIDE_TAG] + [
            f"{prefix}-{name}" for name in sorted({tag[2:] for tag in tags} - {""}) for prefix in "BI"
        ]
    elif dtype.startswith(("int", "uint")) and known_labels is not None:
        names = list(known_labels)
    elif dtype.startswith(("int", "uint")):
        raise ValueError(
            f"{origins['train']}: {LABEL_COLUMN} holds label ids without names (no ClassLabel feature); give the tags "
            "as strings, or continue a trained model, whose id2label names them"
        )
    else:
        raise ValueError(
            f"{origins['train']}: {LABEL_COLUMN} must hold a list of tags (strings or label ids) per tweet, got "
            f"{feature}"
        )
    check_bio(names, origins["train"])
    return names


def check_bio(tags: Iterable[str], origin: str) -> None:
    bad = sorted(tag for tag in tags if tag != OUTSIDE_TAG and not TAG_PATTERN.fullmatch(tag))
    if bad:
        raise ValueError(f"{origin}: tags must be 'O', 'B-TYPE' or 'I-TYPE' (BIO), got {', '.join(map(repr, bad[:5]))}")


def check_rows(split: datasets.Dataset, names: list[str], origin: str) -> None:
    """Every tweet has words, one tag per word, and only tags of `names` (strings) or ids below `len(names)`."""
    known = set(names) | set(range(len(names)))  # tags as names, or as ids
    for row, (words, tags) in enumerate(zip(split[TEXT_COLUMN], split[LABEL_COLUMN], strict=True)):
        if not words:
            raise ValueError(f"{origin}: row {row + 1} has no words")
        if len(words) != len(tags):
            raise ValueError(f"{origin}: row {row + 1} has {len(words)} words and {len(tags)} tags")
        unknown = [tag for tag in tags if tag not in known]
        if unknown:
            raise ValueError(
                f"{origin}: row {row + 1}: tag {unknown[0]!r} is not one of the training split's ({', '.join(names)})"
            )


def label_names(corpus: datasets.DatasetDict) -> list[str]:
    return list(corpus["train"].features["ner_tags"].feature.names)


def image_source(split: datasets.Dataset, use_image: bool) -> str:
    """Where a split's images come from: `features` (cached column), `pixels` (image column with at least one image),
    or `none` (a text-only model, or a corpus without images: the model then takes its text path)."""
    if use_image and "image_features" in split.column_names:
        return "features"
    if use_image and "image" in split.column_names and split.data.column("image").null_count < split.num_rows:
        return "pixels"
    return "none"


def model_rows(split: datasets.Dataset, source: str) -> datasets.Dataset:
    """The split as the collator reads it: cached features arrive as numpy arrays straight from Arrow (4x faster
    than nested Python lists, which would cost more per epoch than the model's forward pass)."""
    if source != "features":
        return split
    unread = [column for column in ("image", "image_problem") if column in split.column_names]  # never decoded
    return split.remove_columns(unread).with_format(
        "numpy", columns=["image_features", "image_mask"], output_all_columns=True
    )
