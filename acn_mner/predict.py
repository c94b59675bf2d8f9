"""acn-predict: tag every row of a JSONL, CSV or CoNLL file with a saved ACN model, one JSONL line per row.

Input rows, by file extension:
    .jsonl  one object per line: ``{"text": "...", "image": "path.jpg", an http(s) URL or null}``
            (optional ``"image_id"``)
    .csv    a header with a ``text`` column and optionally ``image`` (path or URL) and ``image_id`` columns
    .txt    the corpus layout: ``IMGID:<id>`` then ``token<TAB>tag`` lines; images are ``<image_dir>/<id>.jpg``

Output lines keep the input order: ``{"row", <input fields>, "entities", "words", "tags", "scores", "offsets"}``,
or ``{"row", <input fields>, "error"}`` for a row that cannot be tagged (unreadable image, no words, bad JSON);
the error names the input's file and line. Every field of an input row is kept (an input field named like an
output field gets the prefix ``input_``). The output is written under a temporary name and renamed when
complete, and may not be an input of the run: the input file, a file of the model folder or feature cache, or
(when the output exists already, found by one pass over the rows before any work) an image a row names.
The input must be a regular file: a FIFO, a device (``/dev/zero``, or a link to it) or a folder is refused before
the model loads. Files start with an optional UTF-8 byte-order mark; bytes that are not UTF-8, and a CSV with a quote
left open, stop the run with the file and line. A line longer than ``MAX_LINE_BYTES`` is read past without being
held: the error of its JSONL or CSV row, a format error (which stops the run) in the corpus layout.
A feature cache (``acn-dataset cache-features`` output) replaces reading and encoding the images of the
tweets it holds, matched by image id.

Streaming: rows are read lazily a batch at a time; images are decoded and preprocessed in ``--num_workers``
worker processes (each prepares every n-th batch; by default 2 when the model runs on a GPU, none on a CPU, where
the model needs the cores; on Linux the kernel ends them when the main process dies, even by ``kill -9``); the model
runs in the main process; each tagged batch is written at once. Memory does not grow with the number of rows.
With several readers (workers or processes) the input is first indexed in one pass (where each batch starts, 16
bytes per batch in a temporary file: for JSONL a scan of its lines without decoding or JSON, for CSV, whose quoted
fields may span lines, and the corpus layout a parse), and each reader then reads only the byte ranges of its own
batches. Under ``accelerate launch --num_processes N`` each process tags every N-th batch on its own device into a
part file, and the first process merges the parts, by row, into the output.
"""

import argparse
import csv
import ctypes
import functools
import heapq
import io
import itertools
import json
import logging
import os
import signal
import stat
import struct
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO, NoReturn, TypeVar, cast
from urllib.parse import urlsplit

import torch
from accelerate import PartialState
from accelerate.utils import gather_object, parse_flag_from_env
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm.auto import tqdm
from transformers.image_processing_utils import BaseImageProcessor

from modeling_acn import AcnPipeline
from modeling_acn.image_processing_acn import (
    DOWNLOAD_TIMEOUT_SECONDS,
    MAX_DOWNLOAD_BYTES,
    AcnImageError,
    is_image_url,
    load_image_file,
    load_image_url,
    upright_rgb,
)
from modeling_acn.pipeline_acn import as_image_features

from .atomic import atomic_path, temporary_file
from .command_line import ArgumentParser, existing_folder, folder_or_hub_id, one_line_errors
from .corpus import CorpusFormatError, Tweet, image_path, numbered_blocks, parse_tweet
from .feature_cache import FeatureCache
from .output_check import refuse_overwriting_inputs

logger = logging.getLogger(__name__)

INPUT_FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".txt": "conll"}
_T = TypeVar("_T")
JSON_WHITESPACE = " \t\r\n"  # a JSONL line of only these is blank: not a row
UTF8_BOM = "\ufeff".encode()
GPU_NUM_WORKERS = 2  # default with the model on a GPU; on a CPU the model needs the cores (benchmarks/predict_scale.py)
MAX_LINE_BYTES = 1 << 20  # a tweet's row takes hundreds of bytes; a longer line is read past in pieces, never held
PR_SET_PDEATHSIG = 1  # Linux prctl(2): the signal a process gets when its parent dies
SPECIAL_FILE_KINDS = (
    (stat.S_ISDIR, "folder"),
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
)

PREDICTION_FIELDS = ("row", "entities", "words", "tags", "scores", "offsets", "error")
INPUT_FIELD_PREFIX = "input_"  # an input field named like a prediction field is kept under this prefix


class RowError(ValueError):
    """A row that cannot be tagged; its message goes into the row's output line."""


@dataclass
class Row:
    """One input row: `source` (the input's fields) is copied into its output line; `location` is ``file:line``;
    `text` is a string or, for the corpus, words; `image` a file path or an http(s) URL."""

    index: int
    location: str
    source: dict
    text: str | list[str] | None = None
    image: Path | str | None = None
    image_id: str | None = None
    error: str | None = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description="Tag tweets (and their images) with a saved ACN model.")
    parser.add_argument(
        "--model", required=True, type=folder_or_hub_id, help="Folder or Hub id with the model and its processor."
    )
    parser.add_argument(
        "--trust_remote_code",
        action="store_true",
        help="Load the model and processor with the classes of the folder's own code, which then runs (by default the "
        "installed acn-mner classes load it and none of its code runs).",
    )
    parser.add_argument("--input", required=True, type=Path, help="Rows to tag: .jsonl, .csv or .txt (corpus layout).")
    parser.add_argument("--output", required=True, type=Path, help="JSONL file to write, one line per input row.")
    parser.add_argument(
        "--image_dir",
        type=existing_folder,
        help="Base folder of relative image paths (default: the input's folder); "
        "for the corpus layout, the folder of <IMGID>.jpg (without it the corpus is tagged from text alone).",
    )
    parser.add_argument(
        "--feature_cache", type=existing_folder, help="Dataset folder with cached image_features, by image_id."
    )
    parser.add_argument("--feature_split", help="Split of the feature cache to use when it holds several.")
    parser.add_argument("--batch_size", type=int, default=8, help="Tweets per forward pass.")
    parser.add_argument(
        "--num_workers",
        type=int,
        help=f"Worker processes that read rows and decode and preprocess images (0: all in the main process; "
        f"default: {GPU_NUM_WORKERS} with the model on a GPU, 0 on a CPU). The output does not depend on it.",
    )
    parser.add_argument(
        "--device",
        help="Torch device, e.g. cpu or cuda:0 (default: the first GPU if any; under accelerate launch, "
        "each process's own device).",
    )
    parser.add_argument(
        "--aggregation_strategy",
        default="simple",
        choices=("simple", "none"),
        help="simple: one entry per entity; none: one entry per tagged word.",
    )
    parser.add_argument(
        "--backend",
        default="torch",
        choices=("torch", "onnxruntime"),
        help="torch, or ONNX Runtime on a folder written by `acn-export` (CPU only; needs the onnx extra).",
    )
    parser.add_argument(
        "--onnx_file", help="With --backend onnxruntime: the graph to run, e.g. model_int8.onnx (default model.onnx)."
    )
    parser.add_argument(
        "--vision_onnx_file",
        help="With --backend onnxruntime: the image trunk's graph, e.g. vision_int8.onnx (default vision.onnx).",
    )
    parser.add_argument(
        "--allow_private_urls",
        action="store_true",
        help="Fetch image URLs on loopback, private and link-local addresses too (your own network); by default "
        "only public addresses are fetched.",
    )
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size must be positive, got {args.batch_size}")
    if args.num_workers is not None and args.num_workers < 0:
        parser.error(f"--num_workers must be 0 or more, got {args.num_workers}")
    return args


# --- reading rows ------------------------------------------------------------------------------


def input_format(path: Path) -> str:
    """`"jsonl"`, `"csv"` or `"conll"`, from the file's extension."""
    found = INPUT_FORMATS.get(path.suffix.lower())
    if found is None:
        raise ValueError(f"cannot tell the format of {str(path)!r}: use .jsonl, .csv or .txt (corpus layout)")
    return found


def read_rows(path: Path, image_dir: Path | None) -> Iterator[Row]:
    """Rows of a JSONL, CSV or corpus file, read lazily; bad rows carry their error instead of failing the file.

    A file whose rows cannot be told apart (bytes that are not UTF-8, a CSV quote left open) raises a `ValueError`
    naming ``file:line`` when the reading gets there; an unknown extension raises at once.
    """
    return rows_of_lines(input_format(path), path, text_lines(path), image_dir)


def rows_of_lines(
    found: str,
    path: Path,
    lines: Iterator[tuple[int, str | None]],
    image_dir: Path | None,
    first_index: int = 0,
    columns: list[str] | None = None,
) -> Iterator[Row]:
    """Rows of `lines` (numbered, as `text_lines` gives them) of a file in format `found`: the whole file, or a run
    of whole rows starting at row `first_index`, whose CSV header (`columns`) was read elsewhere."""
    if found == "conll":
        return read_corpus_rows(path, image_dir, lines, first_index)
    base = image_dir or path.parent
    if found == "jsonl":
        return read_jsonl_rows(path, base, lines, first_index)
    return read_csv_rows(path, base, lines, first_index, columns)


def open_input(path: Path) -> BinaryIO:
    """The input file, opened for reading in binary; a `ValueError` naming it, before anything is read, when it is
    not a regular file: a FIFO, a device such as ``/dev/zero`` (or a link to one), a socket or a folder, which may
    never end or never answer. Opened without blocking, so that a FIFO is refused instead of waited on (the flag
    changes nothing for a regular file's reads)."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        kind = next((name for is_kind, name in SPECIAL_FILE_KINDS if is_kind(mode)), "special file")
        raise ValueError(f"--input {str(path)!r} is not a regular file but a {kind}")
    return os.fdopen(descriptor, "rb")


def raw_lines(file: IO[bytes], first: int = 1) -> Iterator[tuple[int, bytes | None, int]]:
    """`(line number, line, its size in bytes)` of a binary file from where it stands (line `first`) to its end.
    Lines end at "\\n" and keep it; a line longer than `MAX_LINE_BYTES` comes as None, read past in pieces of that
    size and never held."""
    for number in itertools.count(first):
        data: bytes | None = file.readline(MAX_LINE_BYTES + 1)
        if not data:
            return
        size = len(data)
        if size > MAX_LINE_BYTES and not data.endswith(b"\n"):
            while data and not data.endswith(b"\n"):
                data = file.readline(MAX_LINE_BYTES)
                size += len(data)
            data = None
        yield number, data, size


def text_lines(path: Path) -> Iterator[tuple[int, str | None]]:
    """`(line number, line)` of a UTF-8 file, read lazily. Lines end at "\\n" only (str.splitlines() would also
    break at U+2028 and other separators) and keep it; a leading byte-order mark is dropped; bytes that are not
    UTF-8 raise `ValueError` naming ``file:line``; a line longer than `MAX_LINE_BYTES` comes as None."""
    with open_input(path) as file:
        yield from decoded_lines(path, raw_lines(file))


def decoded_lines(path: Path, lines: Iterator[tuple[int, bytes | None, int]]) -> Iterator[tuple[int, str | None]]:
    """`text_lines` of `raw_lines` of `path`."""
    for number, data, _ in lines:
        yield number, None if data is None else decode_line(path, number, data)


def long_line_error(location: str) -> str:
    return f"{location}: a line longer than {MAX_LINE_BYTES} bytes (MAX_LINE_BYTES), not read"


def decode_line(path: Path, number: int, data: bytes) -> str:
    """Line `number` of `path` as text; its byte-order mark dropped on line 1; a `ValueError` naming ``file:line``
    for bytes that are not UTF-8."""
    try:
        line = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}:{number}: byte {data[error.start]:#04x} is not valid UTF-8") from None
    return line.removeprefix("\ufeff") if number == 1 else line


def read_jsonl_rows(
    path: Path, image_base: Path, lines: Iterator[tuple[int, str | None]], first_index: int = 0
) -> Iterator[Row]:
    index = first_index
    for number, line in lines:
        if line is None:
            yield Row(index, f"{path}:{number}", {}, error=long_line_error(f"{path}:{number}"))
            index += 1
        elif line.strip(JSON_WHITESPACE):  # blank lines (JSON's whitespace only) are not rows
            yield jsonl_row(index, line, f"{path}:{number}", image_base)
            index += 1


def jsonl_row(index: int, line: str, location: str, image_base: Path) -> Row:
    try:
        record = json.loads(line, parse_constant=refuse_constant)
    except json.JSONDecodeError as error:
        return Row(index, location, {}, error=f"{location}: not JSON ({error.msg})")
    except RecursionError:
        return Row(index, location, {}, error=f"{location}: JSON nested too deeply")
    except ValueError as error:  # NaN or Infinity, or an integer longer than Python converts (4300 digits)
        return Row(index, location, {}, error=f"{location}: {str(error).split(';')[0]}")
    if not isinstance(record, dict):
        return Row(index, location, {}, error=f"{location}: expected a JSON object, got {type(record).__name__}")
    return record_row(index, location, record, image_base)


def refuse_constant(name: str) -> NoReturn:
    """`json.loads`' hook for NaN, Infinity and -Infinity, which Python accepts and JSON does not."""
    raise ValueError(f"{name} is not a JSON number")


def read_csv_rows(
    path: Path,
    image_base: Path,
    lines: Iterator[tuple[int, str | None]],
    first_index: int = 0,
    columns: list[str] | None = None,
) -> Iterator[Row]:
    """Rows of a CSV with a header (read from `lines` unless `columns` are given); strict quoting, so an
    unterminated quote fails instead of swallowing rows. A record with a line longer than `MAX_LINE_BYTES` is
    its row's error."""
    records = csv_records(path, lines)
    columns = csv_columns(path, next(records, None)) if columns is None else columns
    for index, (line, values) in enumerate(records, start=first_index):
        location = f"{path}:{line}"
        if values is None:
            yield Row(index, location, {}, error=long_line_error(location))
        elif len(values) > len(columns):
            error = f"{location}: {len(values)} fields, but the header has {len(columns)} (an unquoted comma?)"
            yield Row(index, location, {}, error=error)
        else:
            # a short row leaves its last columns out of the record (missing fields), hence not strict
            yield record_row(index, location, dict(zip(columns, values, strict=False)), image_base)


def csv_columns(path: Path, header: tuple[int, list[str] | None] | None) -> list[str]:
    """The column names of a CSV's first record, which must name a `text` column, each name once."""
    line, columns = (1, None) if header is None else header
    if header is not None and columns is None:
        raise ValueError(long_line_error(f"{path}:{line}"))
    if columns is None or "text" not in columns:
        raise ValueError(f"{path}:1: a CSV input needs a 'text' column, got columns {columns}")
    duplicates = sorted({name for name in columns if columns.count(name) > 1})
    if duplicates:
        raise ValueError(f"{path}:{line}: duplicate columns {duplicates}")
    return columns


def csv_records(path: Path, lines: Iterator[tuple[int, str | None]]) -> Iterator[tuple[int, list[str] | None]]:
    """Yield ``(first line, fields)`` per CSV record of `lines`, blank lines skipped, fields None for a record with
    a line longer than `MAX_LINE_BYTES`; a `ValueError` naming the record's first line when the quoting is broken."""
    numbers: list[int] = []  # of the lines the reader took for the record being read
    long_lines: list[int] = []

    def texts() -> Iterator[str]:
        for number, line in lines:
            numbers.append(number)
            if line is None:  # the reader gets an empty line in its place, and the record is marked
                long_lines.append(number)
            yield "\n" if line is None else line

    reader = csv.reader(texts(), strict=True)
    while True:
        numbers.clear()
        long_lines.clear()
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise ValueError(f"{path}:{numbers[0]}: malformed CSV record ({error}; an unterminated quote?)") from None
        if long_lines:
            yield numbers[0], None
        elif values:
            yield numbers[0], values


def record_row(index: int, location: str, record: dict, image_base: Path) -> Row:
    """A row from a JSON object or CSV record with `text`, optional `image` (path or http(s) URL) and `image_id`;
    every field of the record is kept for the output line."""
    text, image = record.get("text"), record.get("image") or None
    if not isinstance(text, str):
        return Row(index, location, record, error=f"{location}: 'text' must be a string, got {text!r}")
    if image is not None and not isinstance(image, str):
        return Row(index, location, record, error=f"{location}: 'image' must be a path, a URL or null, got {image!r}")
    if image is not None and not is_image_url(image):
        image = image_base / image
    try:
        image_id = record.get("image_id") or (image_stem(image) if image else None)
    except ValueError as error:  # urlsplit's refusal, e.g. "Invalid IPv6 URL"
        return Row(index, location, record, error=f"{location}: 'image' is not a valid URL ({error}): {image!r}")
    return Row(index, location, record, text=text, image=image, image_id=image_id)


def read_corpus_rows(
    path: Path, image_dir: Path | None, lines: Iterator[tuple[int, str | None]], first_index: int = 0
) -> Iterator[Row]:
    """Rows of a corpus file, a tweet block at a time; a format error stops the reading with its ``file:line``."""
    for index, tweet in enumerate(corpus_tweets(path, lines), start=first_index):
        location = f"{path}:{tweet.line}"
        source = {"image_id": tweet.image_id, "text": " ".join(tweet.tokens)}
        image = None if image_dir is None else image_path(image_dir, tweet.image_id)
        error = None
        if image_dir is not None and image is None:
            error = f"{location}: image id {tweet.image_id!r} is not a plain file name"
        yield Row(index, location, source, text=tweet.tokens, image=image, image_id=tweet.image_id, error=error)


def corpus_tweets(path: Path, lines: Iterator[tuple[int, str | None]]) -> Iterator[Tweet]:
    """Tweets of `lines` in the corpus layout; a format error (or no tweet at all) raises `CorpusFormatError`
    naming ``file:line``."""
    empty = True
    for start, block in numbered_blocks(corpus_lines(path, lines)):
        empty = False
        yield parse_tweet(path, start, block)
    if empty:
        raise CorpusFormatError(f"{path}:1: file is empty")


def corpus_lines(path: Path, lines: Iterator[tuple[int, str | None]]) -> Iterator[tuple[int, str]]:
    """The lines without their line ends; a line longer than `MAX_LINE_BYTES` (a token line, in this layout) is a
    format error, `CorpusFormatError` naming it."""
    for number, line in lines:
        if line is None:
            raise CorpusFormatError(long_line_error(f"{path}:{number}"))
        yield number, line.removesuffix("\n").rstrip("\r")


@dataclass
class InputError:
    """A file that cannot be read on, as a worker process hands it to the main process (which raises it)."""

    message: str


def row_batches(path: Path, image_dir: Path | None, batch_size: int) -> Iterator[list[Row] | InputError]:
    """The file's rows in lists of `batch_size` (the last may be shorter), ending with an `InputError` where the
    file cannot be read on."""
    batch = []
    try:
        for row in read_rows(path, image_dir):
            batch.append(row)
            if len(batch) == batch_size:
                yield batch
                batch = []
    except ValueError as error:
        yield InputError(str(error))
        return
    if batch:
        yield batch


class OffsetLines:
    """`text_lines` of a file that remembers where its recent lines start, for an index pass: the lines since the
    last `offset` call, except those `blank` says no row starts on (so a run of blank lines costs no memory; a line
    longer than `MAX_LINE_BYTES` is never blank)."""

    def __init__(self, path: Path, blank: Callable[[bytes], bool]) -> None:
        self.path, self.blank = path, blank
        self._starts: deque[tuple[int, int]] = deque()
        self.end = self.read = 0  # bytes and lines read so far

    def __iter__(self) -> Iterator[tuple[int, str | None]]:
        with open_input(self.path) as file:
            for self.read, data, size in raw_lines(file):
                if data is None or not self.blank(data):
                    self._starts.append((self.read, self.end))
                self.end += size
                yield self.read, None if data is None else decode_line(self.path, self.read, data)

    def offset(self, number: int) -> int:
        """Byte offset of line `number`, where a row starts; the lines before it are forgotten."""
        while self._starts[0][0] < number:
            self._starts.popleft()
        return self._starts[0][1]


class BatchIndex:
    """Where each batch of an input file starts (the byte offset and line number of its first row), so that a reader
    reads only its own batches' bytes.

    Built by one pass over the file: for JSONL, its lines in binary (no decoding, no JSON), the same rows as
    `read_jsonl_rows` (a line of JSON whitespace only is blank); for CSV (whose quoted fields may span lines) and the
    corpus layout, the sequential reader's parse, once. Where that parse stops (bytes that are not UTF-8, a broken
    quote or tweet), the batch it stops in becomes an `InputError` and no batch follows, as reading the whole file
    gives. A JSONL index does not decode, so bytes that are not UTF-8 stop only the reader of their batch: the
    main process, which takes batches in order, stops there with the same error. Kept as 16 bytes
    per batch in a temporary file, not in memory, and read back by position. Use it as a context manager: the
    temporary file goes when the block ends.
    """

    RECORD = struct.Struct("<qq")  # byte offset, line number (from 1) of a batch's first row

    def __init__(self, path: Path, batch_size: int):
        self.path, self.batch_size, self.format = path, batch_size, input_format(path)
        self.columns: list[str] | None = None  # a CSV's header
        self.error: str | None = None  # where the index pass stopped: the last batch is this error
        self._file: IO[bytes] = tempfile.NamedTemporaryFile(prefix="acn-predict-index-", suffix=".bin")
        self.num_batches = self._write_jsonl(self._file) if self.format == "jsonl" else self._write_parsed(self._file)
        self._file.flush()

    def _write_jsonl(self, out: IO[bytes]) -> int:
        rows, offset, pending = 0, 0, bytearray()
        with open_input(self.path) as file:
            for number, data, size in raw_lines(file):
                content = data.removeprefix(UTF8_BOM) if number == 1 and data is not None else data
                if content is None or content.strip(JSON_WHITESPACE.encode()):  # an over-long line is a row: its error
                    if rows % self.batch_size == 0:
                        pending += self.RECORD.pack(offset, number)
                    rows += 1
                offset += size
                if len(pending) >= 1 << 16:
                    out.write(pending)
                    pending.clear()
        out.write(pending)
        return -(-rows // self.batch_size)

    def _write_parsed(self, out: IO[bytes]) -> int:
        if self.format == "csv":  # csv.reader skips an empty line; any other line may start a record
            lines = OffsetLines(self.path, lambda data: not data.rstrip(b"\r\n"))
        else:  # a tweet starts on a line that is not whitespace
            lines = OffsetLines(self.path, lambda data: not data.strip(b" \t\r\n\x0b\x0c"))
        rows, pending = 0, bytearray()
        end = (0, 1)  # (byte offset, line number) after the last whole row
        for start in self._row_starts(lines):
            offset = lines.offset(start)
            if rows % self.batch_size == 0:
                pending += self.RECORD.pack(offset, start)
            rows += 1
            end = (lines.end, lines.read + 1)
            if len(pending) >= 1 << 16:
                out.write(pending)
                pending.clear()
        if self.error is not None:
            if rows % self.batch_size == 0:  # the bad row starts a batch: it ends the one before
                pending += self.RECORD.pack(*end)
            rows = rows - rows % self.batch_size + self.batch_size
        out.write(pending)
        return -(-rows // self.batch_size)

    def _row_starts(self, lines: OffsetLines) -> Iterator[int]:
        """The first line of each row, as the sequential reader parses them; where it stops, `self.error` says why."""
        try:
            if self.format == "csv":
                records = csv_records(self.path, iter(lines))
                self.columns = csv_columns(self.path, next(records, None))
                yield from (start for start, _ in records)
            else:
                yield from (tweet.line for tweet in corpus_tweets(self.path, iter(lines)))
        except ValueError as error:  # where reading the whole file would stop
            self.error = str(error)

    def __enter__(self) -> "BatchIndex":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._file.close()

    def __getstate__(self) -> dict:  # a worker started by spawn reopens the index by name
        state = {
            name: getattr(self, name) for name in ("path", "batch_size", "format", "columns", "error", "num_batches")
        }
        return {**state, "index_name": self._file.name}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({name: value for name, value in state.items() if name != "index_name"})
        self._file = open(state["index_name"], "rb")  # noqa: SIM115 (closed with the dataset's worker)

    def start(self, batch: int) -> tuple[int, int]:
        """(byte offset, line number) of batch `batch`'s first row."""
        return self.RECORD.unpack(os.pread(self._file.fileno(), self.RECORD.size, batch * self.RECORD.size))

    def batches(self, reader: int, readers: int, image_dir: Path | None) -> Iterator[list[Row] | InputError]:
        """Batches `reader`, `reader + readers`, ... of the file, each read as its own byte range (from its first
        row to the next batch's, or to the end of the file) a line at a time; an `InputError` (and the end) where the
        rows of a batch cannot be read, or where the index pass stopped."""
        with open_input(self.path) as file:
            for batch in range(reader, self.num_batches, readers):
                if self.error is not None and batch == self.num_batches - 1:
                    yield InputError(self.error)
                    return
                offset, number = self.start(batch)
                end = self.start(batch + 1)[0] if batch + 1 < self.num_batches else None
                lines = decoded_lines(
                    self.path, raw_lines(io.BufferedReader(ByteRange(file.fileno(), offset, end)), number)
                )
                try:
                    yield list(
                        rows_of_lines(self.format, self.path, lines, image_dir, batch * self.batch_size, self.columns)
                    )
                except ValueError as error:
                    yield InputError(str(error))
                    return


class ByteRange(io.RawIOBase):
    """Bytes `start` to `end` (None: to the end) of an open file, read with `os.pread`: not a byte outside them."""

    def __init__(self, descriptor: int, start: int, end: int | None):
        super().__init__()
        self.descriptor, self.position, self.end = descriptor, start, end

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:  # a writable buffer (memoryview, bytearray)
        size = len(buffer) if self.end is None else min(len(buffer), self.end - self.position)
        data = os.pread(self.descriptor, size, self.position)
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


# --- images ------------------------------------------------------------------------------------


def image_stem(image: Path | str) -> str:
    """A file's name without its suffix; for a URL, that of the last part of its path (``.../media/ab12.jpg?x=1``:
    ``ab12``), as a feature cache's image ids are."""
    return PurePosixPath(urlsplit(image).path).stem if is_image_url(image) else Path(image).stem


def open_image(
    image: Path | str, image_processor: BaseImageProcessor | None = None, allow_private_urls: bool = False
) -> Image.Image:
    """The image (a file path, or an http(s) URL downloaded within the download timeout and byte limit of
    `image_processor`, the pipeline's `AcnImageProcessor`, else the defaults, under the URL policy: public addresses
    only unless `allow_private_urls`) upright and in RGB, read by the one image reader every path shares; `RowError`
    when it cannot be."""
    try:
        if is_image_url(image):
            # getattr: the processor of an older model folder's own code has no download settings
            timeout = getattr(image_processor, "download_timeout", DOWNLOAD_TIMEOUT_SECONDS)
            max_bytes = getattr(image_processor, "max_download_bytes", MAX_DOWNLOAD_BYTES)
            opened = load_image_url(image, timeout=timeout, max_bytes=max_bytes, allow_private_urls=allow_private_urls)
            return upright_rgb(opened[0])
        return upright_rgb(load_image_file(image)[0])
    except AcnImageError as error:
        raise RowError(f"cannot read image {error}") from None


def pipeline_input(
    row: Row,
    feature_cache: Mapping[str, Any],
    split_text: Callable[[str], tuple[list[str], list[tuple[int, int]]]],
    image_processor: BaseImageProcessor | None = None,
    allow_private_urls: bool = False,
) -> dict[str, Any]:
    """The `{"text", "image"}` input of a row; raises `RowError` (naming the row's file and line) for a row that
    cannot be tagged. `image_processor` (the pipeline's) and `allow_private_urls` set how an image URL is
    downloaded (`open_image`)."""
    if row.error is not None:
        raise RowError(row.error)
    assert row.text is not None  # every reader gives a row without an error its text
    words = row.text if isinstance(row.text, list) else split_text(row.text)[0]
    if not words:
        raise RowError(f"{row.location}: text has no words: {row.text!r}")
    try:
        if row.image_id is not None and row.image_id in feature_cache:
            features = feature_cache[row.image_id]
            return {"text": row.text, "image": None if features is None else as_image_features(features)}
        image = None if row.image is None else open_image(row.image, image_processor, allow_private_urls)
        return {"text": row.text, "image": image}
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


@dataclass
class PreparedBatch:
    """A batch of rows ready for the model: `errors` maps a row's place in `rows` to its error, and
    `model_inputs` holds the other rows' pipeline inputs, collated (None when every row failed)."""

    rows: list[Row]
    errors: dict[int, str]
    model_inputs: dict | None


class RowTagger:
    """Tags batches of rows with the steps of an `AcnPipeline`, split between processes: `prepare` (read the
    images, preprocess: one processor call for a batch without images, else row by row and collated) runs in the
    worker processes, `tag` (forward pass, postprocessing) in the main one. Both are the pipeline's own, so a batch
    gives what `pipe(inputs, batch_size=...)` gives. Workers are forked: they share the model's memory and never run
    it."""

    def __init__(self, pipe: AcnPipeline, feature_cache: Mapping, is_split_into_words: bool):
        self.pipe = pipe
        self.feature_cache = feature_cache
        preprocess, forward, postprocess = pipe._sanitize_parameters(
            return_tags=True, is_split_into_words=is_split_into_words
        )
        self.preprocess_params = {**pipe._preprocess_params, **preprocess}
        self.forward_params = {**pipe._forward_params, **forward}
        self.postprocess_params = {**pipe._postprocess_params, **postprocess}

    def prepare(self, rows: list[Row]) -> PreparedBatch:
        """The rows' inputs: from one processor call for the batch when no row has an image (the pipeline's
        `batch_text_inputs`), else row by row; a row that cannot be tagged gets its error, naming its file and line."""
        errors, examples = {}, {}
        for place, row in enumerate(rows):
            try:
                examples[place] = self.example(row)
            except RowError as error:
                errors[place] = str(error)
        if not examples:
            return PreparedBatch(rows, errors, None)
        split = self.preprocess_params.get("is_split_into_words", False)
        batched = self.pipe.batch_text_inputs(list(examples.values()), split)
        if batched is not None:
            return PreparedBatch(rows, errors, batched)
        inputs = []
        for place, example in examples.items():
            try:
                inputs.append(self.pipe.preprocess(example, **self.preprocess_params))
            except ValueError as error:
                errors[place] = f"{rows[place].location}: {error}"
        return PreparedBatch(rows, errors, self.pipe.collate(inputs) if inputs else None)

    def example(self, row: Row) -> dict:
        processor = self.pipe.processor
        return pipeline_input(
            row,
            self.feature_cache,
            processor.tokenizer.split_text,
            processor.image_processor,
            self.preprocess_params.get("allow_private_urls", False),
        )

    def tag(self, batch: PreparedBatch) -> list[dict]:
        """Output lines of the batch's rows, in order; rows that cannot be tagged get an `error` field."""
        results: Iterator[dict[str, Any]] = iter(())
        if batch.model_inputs is not None:
            outputs = self.pipe.forward(batch.model_inputs, **self.forward_params)
            tweets = split_batch(outputs, len(batch.rows) - len(batch.errors))
            results = (  # return_tags=True: postprocess gives a dict
                cast(dict[str, Any], self.pipe.postprocess(tweet, **self.postprocess_params)) for tweet in tweets
            )
        return [
            output_line(row, {"error": batch.errors[place]} if place in batch.errors else next(results))
            for place, row in enumerate(batch.rows)
        ]


def split_batch(outputs: dict, size: int) -> list[dict]:
    """The pipeline's batched forward outputs as one dict per tweet, shaped as `postprocess` reads them: tensors
    keep a batch axis of one, lists give their item."""
    return [
        {
            key: None
            if value is None
            else value[index : index + 1]
            if isinstance(value, torch.Tensor)
            else value[index]
            for key, value in outputs.items()
        }
        for index in range(size)
    ]


class PreparedBatches(IterableDataset):
    """The input's batches of rows, each prepared by `tagger.prepare`, for a `DataLoader`.

    Every reader (one per worker process of each of `num_processes` processes) prepares every `readers`-th batch:
    process `rank`'s batches are `rank, rank + num_processes, ...`, and its workers take those in turn, which is the
    order in which the `DataLoader` hands their batches back. Inside `indexed`, the readers read only their own
    batches' bytes (`BatchIndex`); otherwise each reader reads the whole file.
    """

    def __init__(
        self,
        tagger: RowTagger,
        path: Path,
        image_dir: Path | None,
        batch_size: int,
        rank: int = 0,
        num_processes: int = 1,
    ) -> None:
        self.tagger, self.path, self.image_dir, self.batch_size = tagger, path, image_dir, batch_size
        self.rank, self.num_processes = rank, num_processes
        self.index: BatchIndex | None = None

    @contextmanager
    def indexed(self, num_workers: int) -> Iterator["PreparedBatches"]:
        """Within the block, an input read by more than one reader is read through its batch index."""
        if self.num_processes * max(num_workers, 1) == 1:
            yield self
            return
        with BatchIndex(self.path, self.batch_size) as self.index:
            try:
                yield self
            finally:
                self.index = None

    def __iter__(self) -> Iterator[PreparedBatch | InputError]:
        worker = get_worker_info()
        worker_id, num_workers = (0, 1) if worker is None else (worker.id, worker.num_workers)
        readers, reader = self.num_processes * num_workers, self.rank + self.num_processes * worker_id
        if self.index is not None:
            batches = self.index.batches(reader, readers, self.image_dir)
        else:
            everyone = enumerate(row_batches(self.path, self.image_dir, self.batch_size))
            batches = (
                batch for number, batch in everyone if isinstance(batch, InputError) or number % readers == reader
            )
        for batch in batches:
            if isinstance(batch, InputError):
                yield batch
                return
            yield self.tagger.prepare(batch)


def as_is(item: _T) -> _T:
    """The `DataLoader`'s collate function: each item is already a batch."""
    return item


def tagged_lines(tagger: RowTagger, dataset: PreparedBatches, num_workers: int) -> Iterator[dict]:
    """Output lines of the dataset's batches, in order; a `ValueError` naming ``file:line`` where the input
    cannot be read on."""
    with dataset.indexed(num_workers):
        loader = DataLoader(
            dataset, batch_size=None, num_workers=num_workers, collate_fn=as_is, **worker_settings(num_workers)
        )
        for batch in loader:
            if isinstance(batch, InputError):
                raise ValueError(batch.message)
            yield from tagger.tag(batch)


def worker_settings(num_workers: int) -> dict:
    """The `DataLoader`'s settings for its worker processes: on Linux, forked from this process (the parent
    `end_with_parent` watches), and ended by the kernel when it dies."""
    if num_workers == 0 or not sys.platform.startswith("linux"):
        return {}
    return {"multiprocessing_context": "fork", "worker_init_fn": functools.partial(end_with_parent, os.getpid())}


def end_with_parent(parent: int, worker_id: int) -> None:
    """A worker's initializer: the kernel sends it SIGKILL when its parent, the main process `parent`, dies, however
    it dies (a SIGKILL runs no cleanup, and torch's own watchdog looks only between batches, which a worker stuck in
    a read never reaches)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        raise OSError(ctypes.get_errno(), f"worker {worker_id}: prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before the signal was set
        os.kill(os.getpid(), signal.SIGKILL)


def write_lines(lines: Iterable[dict], path: Path, show_progress: bool) -> dict:
    """Write one JSON line per output line to `path` as they come and return the counts."""
    summary = {"rows": 0, "tagged": 0, "errors": 0, "entities": 0}
    with (
        open(path, "w", encoding="utf-8") as out,
        tqdm(desc="tweets", unit="tweet", disable=not show_progress) as progress,
    ):
        for line in lines:
            text, line = strict_json(line)
            out.write(text + "\n")
            failed = "error" in line
            summary["rows"] += 1
            summary["errors"] += failed
            summary["tagged"] += not failed
            summary["entities"] += len(line.get("entities", ()))
            progress.update()
    return summary


def strict_json(line: dict) -> tuple[str, dict]:
    """The line as strict JSON text that UTF-8 can hold, and the line it writes: a value JSON cannot hold (NaN,
    Infinity, nesting too deep) makes it its row's error line; lone surrogates (as in `"\\ud800"`, which UTF-8 cannot
    encode) are written as `\\uXXXX` escapes, which JSON readers read back as the same string."""
    try:
        text = json.dumps(line, ensure_ascii=False, allow_nan=False)
    except (ValueError, RecursionError) as error:
        line = {"row": line["row"], "error": f"row {line['row']}: the output cannot be written as JSON ({error})"}
        return json.dumps(line), line
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(line, ensure_ascii=True, allow_nan=False)
    return text, line


def read_lines(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as file:
        for line in file:
            yield json.loads(line)


def predict_file(tagger: RowTagger, dataset: PreparedBatches, output: Path, num_workers: int) -> dict:
    """Write one line per row to `output` (under a temporary name, renamed when complete) and return the counts."""
    with atomic_path(output) as temporary:
        return write_lines(tagged_lines(tagger, dataset, num_workers), temporary, show_progress=True)


def predict_file_distributed(
    tagger: RowTagger, dataset: PreparedBatches, output: Path, num_workers: int, state: PartialState
) -> dict:
    """Each process writes its batches to its part file (a temporary file beside `output`, named by the process and
    at random: another run's never collides with it); the main process merges the parts by row into `output` (under
    a temporary name, renamed when complete). Returns the counts of the output on the main process, of the process's
    own rows elsewhere."""
    with temporary_file(output) as part:
        part_names = gather_object([str(part)])  # every process's part file, by rank
        summary = write_lines(tagged_lines(tagger, dataset, num_workers), part, state.is_main_process)
        state.wait_for_everyone()
        if state.is_main_process:
            parts = [read_lines(Path(name)) for name in part_names]
            with atomic_path(output) as temporary:
                summary = write_lines(heapq.merge(*parts, key=lambda line: line["row"]), temporary, False)
        state.wait_for_everyone()
    return summary


def parse_device(device: str | None) -> int | str | None:
    return int(device) if device is not None and device.lstrip("-").isdigit() else device


def launched_state() -> PartialState:
    """The processes `accelerate launch` started (one without it); on CPUs when there is no GPU or
    ``ACCELERATE_USE_CPU`` is set (Accelerate's own `PartialState` counts a CPU launch as one process unless told)."""
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


def run_inputs(args: argparse.Namespace) -> Iterator[tuple[str, Path | str | None]]:
    """What the run reads, for the output check: the input, the model folder, the feature cache and, when the output
    exists already (only an existing file can be destroyed), every local image a row names, found by one pass over
    the rows (a read error stops it, as it would stop the tagging)."""
    yield "--input file", args.input
    yield "model folder", args.model
    yield "feature cache", args.feature_cache
    if args.output.exists():
        for row in read_rows(args.input, args.image_dir):
            if row.image is not None and not is_image_url(row.image):
                yield f"image that {row.location} names", row.image


def run(args: argparse.Namespace) -> dict:
    open_input(args.input).close()  # a FIFO, a device or a folder is refused before anything else
    if args.output.is_dir():
        raise ValueError(f"--output {str(args.output)!r} is a folder; give a file path")
    refuse_overwriting_inputs(args.output, run_inputs(args))
    is_corpus = input_format(args.input) == "conll"
    state = launched_state()
    if state.num_processes > 1 and args.device is not None:
        raise ValueError(
            f"--device {args.device!r} does not go with {state.num_processes} processes: each uses its own"
        )
    device = state.device if state.num_processes > 1 else parse_device(args.device)
    feature_cache = {} if args.feature_cache is None else FeatureCache.load(args.feature_cache, args.feature_split)
    backend = (
        {}
        if args.backend == "torch"
        else {"backend": args.backend, "onnx_file": args.onnx_file, "vision_onnx_file": args.vision_onnx_file}
    )
    pipe = AcnPipeline.from_pretrained(
        args.model,
        device=device,
        trust_remote_code=args.trust_remote_code,
        aggregation_strategy=args.aggregation_strategy,
        allow_private_urls=args.allow_private_urls,
        **backend,
    )
    tagger = RowTagger(pipe, feature_cache, is_split_into_words=is_corpus)
    dataset = PreparedBatches(
        tagger, args.input, args.image_dir, args.batch_size, state.process_index, state.num_processes
    )
    num_workers = args.num_workers
    if num_workers is None:
        num_workers = GPU_NUM_WORKERS if pipe.device.type == "cuda" else 0
    if state.num_processes > 1:
        summary = predict_file_distributed(tagger, dataset, args.output, num_workers, state)
    else:
        summary = predict_file(tagger, dataset, args.output, num_workers)
    if state.is_main_process:
        logger.info(
            "%d rows: %d tagged (%d entities), %d errors -> %s",
            summary["rows"],
            summary["tagged"],
            summary["entities"],
            summary["errors"],
            args.output,
        )
    return summary


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    run(parse_args(argv))


cli = one_line_errors(main)  # the console command

if __name__ == "__main__":
    cli()
