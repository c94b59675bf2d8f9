"""acn-predict: tag every row of a JSONL, CSV or CoNLL file with a saved ACN model, one JSONL line per row.

Input rows, by file extension:
    .jsonl  one object per line: ``{"text": "...", "image": "path.jpg" or null}`` (optional ``"image_id"``)
    .csv    a header with a ``text`` column and optionally ``image`` and ``image_id`` columns
    .txt    the corpus layout: ``IMGID:<id>`` then ``token<TAB>tag`` lines; images are ``<image_dir>/<id>.jpg``

Output lines keep the input order: ``{"row", <input fields>, "entities", "words", "tags", "scores", "offsets"}``,
or ``{"row", <input fields>, "error"}`` for a row that cannot be tagged (unreadable image, no words, bad JSON);
the error names the input's file and line. Every field of an input row is kept (an input field named like an
output field gets the prefix ``input_``). The output is written under a temporary name and renamed when
complete, and may not be the input file. Files start with an optional UTF-8 byte-order mark; bytes that are not
UTF-8, and a CSV with a quote left open, stop the run with the file and line.
A feature cache (``twitter_mner.py cache-features`` output) replaces reading and encoding the images of the
tweets it holds, matched by image id.
"""

import argparse
import csv
import io
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import datasets
from PIL import Image
from tqdm.auto import tqdm

from acn_commands.atomic import atomic_path, refuse_overwriting_inputs
from dataset_script.twitter_mner import decode_text, image_path, read_split_file
from modeling_acn import AcnPipeline
from modeling_acn.image_processing_acn import AcnImageError, load_image_file, upright_rgb
from modeling_acn.pipeline_acn import as_image_features

logger = logging.getLogger(__name__)

INPUT_FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".txt": "conll"}
CACHE_COLUMNS = ("image_id", "image_features", "image_mask")
ROWS_PER_BATCH_CHUNK = 16  # rows are read and checked this many batches at a time, then tagged together


PREDICTION_FIELDS = ("row", "entities", "words", "tags", "scores", "offsets", "error")
INPUT_FIELD_PREFIX = "input_"  # an input field named like a prediction field is kept under this prefix


class RowError(ValueError):
    """A row that cannot be tagged; its message goes into the row's output line."""


@dataclass
class Row:
    """One input row: `source` (the input's fields) is copied into its output line; `location` is ``file:line``;
    `text` is a string or, for the corpus, words."""

    index: int
    location: str
    source: dict
    text: str | list[str] | None = None
    image: Path | None = None
    image_id: str | None = None
    error: str | None = None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Tag tweets (and their images) with a saved ACN model.")
    parser.add_argument("--model", required=True, help="Folder or Hub id with the model and its processor.")
    parser.add_argument("--input", required=True, type=Path, help="Rows to tag: .jsonl, .csv or .txt (corpus layout).")
    parser.add_argument("--output", required=True, type=Path, help="JSONL file to write, one line per input row.")
    parser.add_argument(
        "--image_dir", type=Path, help="Base folder of relative image paths (default: the input's folder); "
        "for the corpus layout, the folder of <IMGID>.jpg (without it the corpus is tagged from text alone)."
    )
    parser.add_argument("--feature_cache", type=Path, help="Dataset folder with cached image_features, by image_id.")
    parser.add_argument("--feature_split", help="Split of the feature cache to use when it holds several.")
    parser.add_argument("--batch_size", type=int, default=8, help="Tweets per forward pass.")
    parser.add_argument("--device", help="Torch device, e.g. cpu or cuda:0 (default: the first GPU if any).")
    parser.add_argument(
        "--aggregation_strategy", default="simple", choices=("simple", "none"),
        help="simple: one entry per entity; none: one entry per tagged word.",
    )
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size must be positive, got {args.batch_size}")
    return args


# --- reading rows ------------------------------------------------------------------------------


def read_rows(path: Path, image_dir: Path | None) -> list[Row]:
    """Rows of a JSONL, CSV or corpus file; bad rows carry their error instead of failing the file.

    A file whose rows cannot be told apart (bytes that are not UTF-8, a CSV quote left open) fails as a whole
    with a `ValueError` naming ``file:line``.
    """
    input_format = INPUT_FORMATS.get(path.suffix.lower())
    if input_format is None:
        raise ValueError(f"cannot tell the format of {str(path)!r}: use .jsonl, .csv or .txt (corpus layout)")
    if input_format == "conll":
        return read_corpus_rows(path, image_dir)
    base = image_dir or path.parent
    if input_format == "jsonl":
        return read_jsonl_rows(path, base)
    return read_csv_rows(path, base)


def read_jsonl_rows(path: Path, image_base: Path) -> list[Row]:
    rows = []
    for number, line in enumerate(decode_text(path).split("\n"), start=1):
        if line.strip():  # blank lines are not rows
            rows.append(jsonl_row(len(rows), line, f"{path}:{number}", image_base))
    return rows


def jsonl_row(index: int, line: str, location: str, image_base: Path) -> Row:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        return Row(index, location, {}, error=f"{location}: not JSON ({error.msg})")
    if not isinstance(record, dict):
        return Row(index, location, {}, error=f"{location}: expected a JSON object, got {type(record).__name__}")
    return record_row(index, location, record, image_base)


def read_csv_rows(path: Path, image_base: Path) -> list[Row]:
    """Rows of a CSV with a header; strict quoting, so an unterminated quote fails instead of swallowing rows."""
    records = csv_records(path)
    header = next(records, None)
    if header is None or "text" not in header[1]:
        raise ValueError(f"{path}:1: a CSV input needs a 'text' column, got columns {None if header is None else header[1]}")
    columns = header[1]
    duplicates = sorted({name for name in columns if columns.count(name) > 1})
    if duplicates:
        raise ValueError(f"{path}:{header[0]}: duplicate columns {duplicates}")
    rows = []
    for line, values in records:
        location = f"{path}:{line}"
        if len(values) > len(columns):
            error = f"{location}: {len(values)} fields, but the header has {len(columns)} (an unquoted comma?)"
            rows.append(Row(len(rows), location, {}, error=error))
        else:
            rows.append(record_row(len(rows), location, dict(zip(columns, values)), image_base))
    return rows


def csv_records(path: Path):
    """Yield ``(first line, fields)`` per CSV record, blank lines skipped; a `ValueError` naming the record's
    first line when the quoting is broken."""
    reader = csv.reader(io.StringIO(decode_text(path), newline=""), strict=True)
    while True:
        start = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise ValueError(f"{path}:{start}: malformed CSV record ({error}; an unterminated quote?)") from None
        if values:
            yield start, values


def record_row(index: int, location: str, record: dict, image_base: Path) -> Row:
    """A row from a JSON object or CSV record with `text`, optional `image` (path) and `image_id`; every field of
    the record is kept for the output line."""
    text, image = record.get("text"), record.get("image") or None
    if not isinstance(text, str):
        return Row(index, location, record, error=f"{location}: 'text' must be a string, got {text!r}")
    if image is not None and not isinstance(image, str):
        return Row(index, location, record, error=f"{location}: 'image' must be a path or null, got {image!r}")
    image = None if image is None else image_base / image
    image_id = record.get("image_id") or (image.stem if image else None)
    return Row(index, location, record, text=text, image=image, image_id=image_id)


def read_corpus_rows(path: Path, image_dir: Path | None) -> list[Row]:
    rows = []
    for index, tweet in enumerate(read_split_file(path)):
        location = f"{path}:{tweet.line}"
        source = {"image_id": tweet.image_id, "text": " ".join(tweet.tokens)}
        image = None if image_dir is None else image_path(image_dir, tweet.image_id)
        error = None
        if image_dir is not None and image is None:
            error = f"{location}: image id {tweet.image_id!r} is not a plain file name"
        rows.append(Row(index, location, source, text=tweet.tokens, image=image, image_id=tweet.image_id, error=error))
    return rows


# --- images ------------------------------------------------------------------------------------


def load_feature_cache(path: Path, split: str | None) -> dict:
    """`image_id -> (49, 512) features, or None for a tweet cached without an image` from a cached dataset."""
    cached = datasets.load_from_disk(str(path))
    if isinstance(cached, datasets.DatasetDict):
        if split is None and len(cached) != 1:
            raise ValueError(f"feature cache {str(path)!r} holds splits {sorted(cached)}; choose one with --feature_split")
        if split is not None and split not in cached:
            raise ValueError(f"feature cache {str(path)!r} has no split {split!r}, only {sorted(cached)}")
        cached = cached[split or next(iter(cached))]
    missing = [column for column in CACHE_COLUMNS if column not in cached.column_names]
    if missing:
        raise ValueError(f"feature cache {str(path)!r} lacks columns {missing}; build it with twitter_mner.py cache-features")
    table = cached.select_columns(list(CACHE_COLUMNS)).with_format("torch")
    return {
        record["image_id"]: record["image_features"] if bool(record["image_mask"]) else None
        for record in table
    }


def open_image(path: Path) -> Image.Image:
    """The image upright and in RGB, read by the one image reader every path shares; `RowError` when it cannot be."""
    try:
        return upright_rgb(load_image_file(path)[0])
    except AcnImageError as error:
        raise RowError(f"cannot read image {error}") from None


def pipeline_input(row: Row, feature_cache: dict, split_text) -> dict:
    """The `{"text", "image"}` input of a row; raises `RowError` (naming the row's file and line) for a row that
    cannot be tagged."""
    if row.error is not None:
        raise RowError(row.error)
    words = row.text if isinstance(row.text, list) else split_text(row.text)[0]
    if not words:
        raise RowError(f"{row.location}: text has no words: {row.text!r}")
    try:
        if row.image_id in feature_cache:
            features = feature_cache[row.image_id]
            return {"text": row.text, "image": None if features is None else as_image_features(features)}
        return {"text": row.text, "image": None if row.image is None else open_image(row.image)}
    except (RowError, ValueError) as error:
        raise RowError(f"{row.location}: {error}") from None


def output_line(row: Row, prediction: dict) -> dict:
    """The row's input fields, then the prediction; an input field named like a prediction field is renamed."""
    line = {"row": row.index}
    for key, value in row.source.items():
        while key in PREDICTION_FIELDS or key in prediction:
            key = INPUT_FIELD_PREFIX + key
        line[key] = value
    return {**line, **prediction}


# --- tagging -----------------------------------------------------------------------------------


def tag_chunk(pipe: AcnPipeline, rows: list[Row], feature_cache: dict, batch_size: int) -> list[dict]:
    """Output lines of a chunk of rows, in order; rows that cannot be tagged get an `error` field."""
    lines, inputs, tagged = {}, [], []
    for row in rows:
        try:
            inputs.append(pipeline_input(row, feature_cache, pipe.processor.tokenizer.split_text))
            tagged.append(row)
        except RowError as error:
            lines[row.index] = output_line(row, {"error": str(error)})
    if inputs:
        is_split = isinstance(inputs[0]["text"], list)
        results = pipe(inputs, batch_size=batch_size, return_tags=True, is_split_into_words=is_split)
        for row, result in zip(tagged, results, strict=True):
            lines[row.index] = output_line(row, result)
    return [lines[row.index] for row in rows]


def predict_file(pipe: AcnPipeline, rows: list[Row], output: Path, feature_cache: dict, batch_size: int) -> dict:
    """Write one line per row to `output` (under a temporary name, renamed when complete) and return the counts."""
    summary = {"rows": len(rows), "tagged": 0, "errors": 0, "entities": 0}
    chunk_size = batch_size * ROWS_PER_BATCH_CHUNK
    with (
        atomic_path(output) as temporary,
        open(temporary, "w", encoding="utf-8") as out,
        tqdm(total=len(rows), desc="tweets", unit="tweet") as progress,
    ):
        for start in range(0, len(rows), chunk_size):
            for line in tag_chunk(pipe, rows[start : start + chunk_size], feature_cache, batch_size):
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
                failed = "error" in line
                summary["errors"] += failed
                summary["tagged"] += not failed
                summary["entities"] += len(line.get("entities", ()))
            progress.update(min(chunk_size, len(rows) - start))
    return summary


def parse_device(device: str | None):
    return int(device) if device is not None and device.lstrip("-").isdigit() else device


def run(args: argparse.Namespace) -> dict:
    if args.output.is_dir():
        raise ValueError(f"--output {str(args.output)!r} is a folder; give a file path")
    refuse_overwriting_inputs(args.output, {"--input": args.input})
    rows = read_rows(args.input, args.image_dir)
    feature_cache = {} if args.feature_cache is None else load_feature_cache(args.feature_cache, args.feature_split)
    pipe = AcnPipeline.from_pretrained(
        args.model, device=parse_device(args.device), aggregation_strategy=args.aggregation_strategy
    )
    summary = predict_file(pipe, rows, args.output, feature_cache, args.batch_size)
    logger.info(
        "%d rows: %d tagged (%d entities), %d errors -> %s",
        summary["rows"], summary["tagged"], summary["entities"], summary["errors"], args.output,
    )
    return summary


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    run(parse_args(argv))


if __name__ == "__main__":
    main()
