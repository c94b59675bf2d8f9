"""acn-predict's readers read only their own batches' bytes (`BatchIndex`), for JSONL, CSV and the corpus layout:
the same rows (and the same stop where a file cannot be read on) as reading the whole file, checked against the
sequential reader, and no byte of another reader's batches."""

import json
import os
from pathlib import Path

import pytest

from acn_mner.predict import BatchIndex, InputError, row_batches


def awkward_jsonl(path: Path) -> Path:
    """Rows with a byte-order mark, blank lines of every JSON whitespace, a line of other whitespace (a row: not
    JSON), broken JSON, a non-object, text with a U+2028 separator and CRLF endings."""
    lines = ["\ufeff" + json.dumps({"text": "Obama in Paris", "id": 0})]
    for number in range(1, 23):
        lines.append(json.dumps({"text": f"tweet {number} caf\u00e9 \u2028 x", "id": number}))
        if number % 4 == 0:
            lines.append(" \t\r")  # blank
        if number % 7 == 0:
            lines.append("")  # blank
        if number == 9:
            lines.append("\u00a0")  # not JSON whitespace: a row, whose error names its line
        if number == 11:
            lines.append('{"text": broken')
        if number == 12:
            lines.append("[1, 2]")
        if number == 15:
            lines.append('{"text": "a lone\rCR"}')  # a row (not JSON: a raw control character), one line
    text = "\r\n".join(lines[:10]) + "\r\n" + "\n".join(lines[10:])  # mixed endings, no newline at the end
    path.write_text(text, encoding="utf-8")
    return path


def awkward_csv(path: Path, ending: bytes = b"") -> Path:
    """A header after a byte-order mark, quoted fields spanning lines (CRLF and LF inside), blank lines, a row with
    too many fields, an empty text, non-ASCII text; `ending` is appended (a broken record or bad bytes)."""
    lines = ["\ufefftext,image_id,extra\r\n", '"Obama\r\nin Paris",1,a\r\n', "\r\n"]
    for number in range(2, 21):
        if number % 5 == 0:
            lines.append(f'"tweet {number}\nover ""two"" lines",{number},x\n')
        elif number == 7:
            lines.append("too,many,fields,here\n")
        elif number == 11:
            lines.append(",11,\n\n\n")
        else:
            lines.append(f"caf\u00e9 {number} \u2028,{number},\n")
    path.write_bytes("".join(lines).encode() + ending)
    return path


def awkward_corpus(path: Path, ending: bytes = b"") -> Path:
    """Tweet blocks with CRLF and LF endings, several blank lines between blocks, an image id that is not a file
    name; `ending` is appended."""
    blocks = []
    for number in range(17):
        image = "../escape" if number == 4 else f"{number}.jpg"
        blocks.append(f"IMGID:{image}\nObama\tB-PER\nin\tO\nParis{number}\tB-LOC\n")
    text = "\n".join(blocks[:6]).replace("\n", "\r\n") + "\n\n\n" + "\n".join(blocks[6:])
    path.write_bytes(("\ufeff" + text).encode() + ending)
    return path


FILES = {
    "jsonl": lambda folder: awkward_jsonl(folder / "rows.jsonl"),
    "csv": lambda folder: awkward_csv(folder / "rows.csv"),
    "csv, then a quote left open": lambda folder: awkward_csv(folder / "rows.csv", b'"open quote,1,\nmore\n'),
    "csv, then bytes that are not UTF-8": lambda folder: awkward_csv(folder / "rows.csv", b"caf\xe9,1,\nlast,2,\n"),
    "csv, header without text": lambda folder: (
        (folder / "rows.csv").write_bytes(b"words,image\na,b\n") and folder / "rows.csv"
    ),
    "corpus": lambda folder: awkward_corpus(folder / "rows.txt"),
    "corpus, then a broken tweet": lambda folder: awkward_corpus(
        folder / "rows.txt", b"\nIMGID:x\nno tab here\n\nIMGID:y\na\tO\n"
    ),
    "corpus, empty": lambda folder: (folder / "rows.txt").write_bytes(b"\n\n") and folder / "rows.txt",
}


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5, 64])
@pytest.mark.parametrize("readers", [1, 2, 3])
@pytest.mark.parametrize("kind", list(FILES))
def test_readers_of_byte_ranges_give_the_batches_of_a_whole_file_read(tmp_path, batch_size, readers, kind):
    path = FILES[kind](tmp_path)
    image_dir = tmp_path / "images" if kind.startswith("corpus") else None
    expected = list(row_batches(path, image_dir, batch_size))  # the sequential reader: the brute force
    with BatchIndex(path, batch_size) as index:
        assert index.num_batches == len(expected)
        per_reader = [list(index.batches(reader, readers, image_dir)) for reader in range(readers)]
    interleaved = [per_reader[number % readers][number // readers] for number in range(len(expected))]
    assert interleaved == expected
    assert sum(map(len, per_reader)) == len(expected)  # nothing after a stop
    stops = [batch for batch in expected if isinstance(batch, InputError)]
    assert len(stops) == (kind not in ("jsonl", "csv", "corpus"))  # the broken files stop where the whole read stops


def test_the_awkward_files_have_the_rows_they_promise(tmp_path):
    rows = [row for batch in row_batches(awkward_csv(tmp_path / "rows.csv"), None, 64) for row in batch]
    assert (
        len(rows) == 20 and rows[0].text == "Obama\r\nin Paris" and rows[5].location.endswith(":10")
    )  # number 5 spans lines 8-9
    assert [row.index for row in rows if row.error] == [6]  # too many fields (an empty text fails later, when tagged)
    tweets = [row for batch in row_batches(awkward_corpus(tmp_path / "rows.txt"), tmp_path, 64) for row in batch]
    assert len(tweets) == 17 and tweets[6].location.endswith(":33") and tweets[16].text[-1] == "Paris16"
    assert [row.index for row in tweets if row.error] == [4]  # "../escape" is not a plain file name


def test_jsonl_rows_are_numbered_and_keep_their_errors(tmp_path):
    expected = list(row_batches(awkward_jsonl(tmp_path / "rows.jsonl"), None, 5))
    rows = [row for batch in expected for row in batch]
    assert [row.index for row in rows] == list(range(len(rows)))
    assert sum(row.error is not None for row in rows) == 4  # the NBSP line, the broken line, the list, the CR


def test_the_blank_line_rule_is_jsons_whitespace(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "a"}\n \t\n\u00a0\n', encoding="utf-8")
    rows = [row for batch in row_batches(path, None, 8) for row in batch]
    assert len(rows) == 2 and rows[1].error == f"{path}:3: not JSON (Expecting value)"


def test_a_reader_reads_only_its_own_batches(tmp_path, monkeypatch):
    path = tmp_path / "rows.jsonl"
    lines = [json.dumps({"text": f"tweet number {number}"}) + "\n" for number in range(200)]
    path.write_text("".join(lines), encoding="utf-8")
    reads, real, rows_file = [], os.pread, path.stat()
    with BatchIndex(path, batch_size=8) as index:

        def counting(fd, length, offset):
            data = real(fd, length, offset)
            if os.path.samestat(os.fstat(fd), rows_file):  # reads of the rows file, not of the index
                reads.append(len(data))
            return data

        monkeypatch.setattr(os, "pread", counting)
        batches = list(index.batches(1, 3, tmp_path))  # batches 1, 4, 7, ... of 25
    own = [lines[batch * 8 : batch * 8 + 8] for batch in range(1, 25, 3)]
    assert [[row.text for row in batch] for batch in batches] == [
        [json.loads(line)["text"] for line in part] for part in own
    ]
    assert sum(reads) == sum(len(line.encode()) for part in own for line in part)  # not a byte of the other readers'


def test_bytes_that_are_not_utf8_stop_only_the_reader_that_owns_them(tmp_path):
    path = tmp_path / "rows.jsonl"
    good = b'{"text": "Obama visits Paris"}\n'
    path.write_bytes(good * 3 + b'{"text": "caf\xe9"}\n' + good * 4)  # line 4: batch 1 of batches of 2
    with BatchIndex(path, 2) as index:
        first = list(index.batches(0, 2, tmp_path))
        second = list(index.batches(1, 2, tmp_path))
    assert [len(batch) for batch in first] == [2, 2]  # batches 0 and 2 read on past the bad bytes
    assert second == [InputError(f"{path}:4: byte 0xe9 is not valid UTF-8")]


def test_the_index_file_goes_when_the_block_ends(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "a"}\n' * 5, encoding="utf-8")
    with BatchIndex(path, 2) as index:
        name = Path(index.__getstate__()["index_name"])
        assert name.stat().st_size == 3 * BatchIndex.RECORD.size
    assert not name.exists()


def test_a_bad_image_url_is_that_rows_error_not_the_files(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("text,image\na,x.jpg\nb,http://[::1/x.jpg\nc,y.jpg\n", encoding="utf-8")
    rows = [row for batch in row_batches(path, None, 1) for row in batch]
    assert [row.error for row in rows] == [
        None,
        f"{path}:3: 'image' is not a valid URL (Invalid IPv6 URL): 'http://[::1/x.jpg'",
        None,
    ]


@pytest.mark.parametrize("suffix", [".csv", ".txt"])
def test_the_index_pass_does_not_keep_blank_lines(tmp_path, suffix):
    import tracemalloc

    path = tmp_path / f"rows{suffix}"
    head = "text\na\n" if suffix == ".csv" else "IMGID:1\na\tO\n"
    path.write_text(
        head + "\n" * 300_000 + ("b\n" if suffix == ".csv" else "IMGID:2\nb\tO\n") + "\r\n" * 300_000, encoding="utf-8"
    )
    tracemalloc.start()
    with BatchIndex(path, 8) as index:
        peak = tracemalloc.get_traced_memory()[1]
        assert [len(batch) for batch in index.batches(0, 1, None)] == [2]
    tracemalloc.stop()
    assert peak < 2**20  # 600,000 blank lines: a deque entry each would take tens of MiB
