"""What the scripts in benchmarks/ share: timing a call, a timed child process's thread counts, this machine's
matmul rate (the peak a speed is compared with), how many words two taggings agree on, the Markdown tables they print
and the JSON report they write."""

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .atomic import write_text

VALUE_COLUMN = "value"  # the column of a table row that is a single value rather than a mapping of columns


def timed(
    function: Callable[..., object], *args: Any, repeats: int, warmup: int = 1, device: str | torch.device = "cpu"
) -> float:
    """Median seconds of `function(*args)` over `repeats` runs after `warmup` untimed runs (the upper median for an
    even count). The arguments are bound here, at the call: a loop passes each iteration's own values, where a
    lambda would read the loop's variables whenever it runs. On a CUDA device each run is synchronised."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        function(*args)
    times = []
    for _ in range(repeats):
        _synchronize(device)
        started = time.perf_counter()
        function(*args)
        _synchronize(device)
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def thread_environment(threads: int) -> dict[str, str]:
    """A child process's environment for a timed run: this one's (CPU ISA limits included) with every runtime's
    thread count (OpenMP, MKL, ONNX Runtime's intra-op pool) set to `threads`."""
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    count = str(threads)
    return {**os.environ, "OMP_NUM_THREADS": count, "MKL_NUM_THREADS": count, "ORT_INTRA_OP_NUM_THREADS": count}


def _synchronize(device: str | torch.device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def matmul_gflops(
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 10
) -> float:
    """This machine's matrix-product rate in GFLOP/s (2 per multiply-add) with torch's threads: the median of
    `repeats` products of two `size` x `size` matrices, the reference peak a benchmark's speed is a fraction of."""
    left = torch.randn(size, size, device=device, dtype=dtype)  # (size, size)
    right = torch.randn(size, size, device=device, dtype=dtype)  # (size, size)
    seconds = timed(torch.matmul, left, right, repeats=repeats, device=device)
    return 2 * size**3 / seconds / 1e9


def agreement(tags: Sequence[Sequence[str]], reference: Sequence[Sequence[str]]) -> float:
    """The share of words whose tag equals the reference's: `tags` and `reference` hold the same tweets, a list of
    word tags each; a different number of tweets or of words in a tweet is an error, not a disagreement."""
    if len(tags) != len(reference):
        raise ValueError(f"{len(tags)} tweets against {len(reference)} in the reference")
    same = words = 0
    for index, (tweet, expected) in enumerate(zip(tags, reference, strict=True)):
        if len(tweet) != len(expected):
            raise ValueError(f"tweet {index} has {len(tweet)} tags against {len(expected)} in the reference")
        same += sum(tag == wanted for tag, wanted in zip(tweet, expected, strict=True))
        words += len(tweet)
    if not words:
        raise ValueError("no words to compare")
    return same / words


def format_value(value: object) -> str:
    """A table cell: nothing for None, 3 significant digits for a float, ``{key=value, ...}`` for a mapping."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{key}={format_value(item)}" for key, item in value.items()) + "}"
    return str(value)


def markdown_table(
    rows: Mapping[Any, object],
    *,
    name_header: str = "",
    columns: Sequence[str] | None = None,
    headers: Sequence[str] | None = None,
) -> str:
    """A Markdown table with a row per entry of `rows` (name -> {column: value}; a value that is not a mapping fills
    the column `VALUE_COLUMN`). `columns` default to every column of the rows in the order they first appear, and
    `headers` (one per column) to the column names; cells go through `format_value`, so a script formats a number
    its own way by passing a string, and a column a row lacks is left empty."""
    table: dict[Any, Mapping[Any, object]] = {
        name: row if isinstance(row, Mapping) else {VALUE_COLUMN: row} for name, row in rows.items()
    }
    if columns is None:
        columns = list(dict.fromkeys(column for row in table.values() for column in row))
    headers = columns if headers is None else headers
    if len(headers) != len(columns):
        raise ValueError(f"{len(headers)} headers for {len(columns)} columns")
    lines = [_markdown_row([name_header, *headers]), "|" + "---|" * (len(columns) + 1)]
    for name, row in table.items():
        lines.append(_markdown_row([str(name), *(format_value(row.get(column)) for column in columns)]))
    return "\n".join(lines)


def _markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"  # a bare | would end the cell


def print_table(
    title: str,
    rows: Mapping[Any, object],
    *,
    name_header: str = "",
    columns: Sequence[str] | None = None,
    headers: Sequence[str] | None = None,
) -> None:
    """Print `markdown_table(rows, ...)` under a ``## title`` heading, at once (a long benchmark shows each table as
    soon as it is measured)."""
    table = markdown_table(rows, name_header=name_header, columns=columns, headers=headers)
    print(f"\n## {title}\n{table}", flush=True)


def write_json(path: str | os.PathLike, report: object) -> None:
    """Write a benchmark's figures as indented JSON, atomically (its folder made if need be); numbers that are not
    Python's own (numpy, 0-d tensors) are written as floats."""
    write_text(path, json.dumps(report, indent=2, default=float) + "\n")


__all__ = [
    "VALUE_COLUMN",
    "agreement",
    "format_value",
    "markdown_table",
    "matmul_gflops",
    "print_table",
    "timed",
    "write_json",
]
