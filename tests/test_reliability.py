"""Hostile inputs a new user might try, and what each gets: an error naming the file and line or the row, a row
error while the run goes on, or the same answer on every path. Each test is one row of the README's table."""

import io
import json
import os
import struct
import threading
import time
import warnings
import zlib

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from PIL import Image

from acn_mner import explain, predict
from acn_mner.corpus import load_twitter_mner, read_image
from acn_mner.feature_cache import check_features_output_dir
from acn_mner.parquet_export import export_parquet
from modeling_acn import AcnImageProcessor, image_processing_acn
from tests.corpus_fixtures import corpus_text, encode, write_corpus
from tests.pipeline_fixtures import striped_image, tiny_pipeline

SIXTEEN_BIT_VALUE = 25700  # 25700 / 257 = 100 in 8 bits; clipping instead of scaling gives 255
MEGAPIXELS_150 = (15000, 10000)


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def predict_args(model_folder, input_path, output_path, *extra):
    argv = ["--model", str(model_folder), "--input", str(input_path), "--output", str(output_path), "--device", "cpu"]
    return predict.parse_args(argv + list(extra))


def output_lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def png_claiming(size: tuple[int, int]) -> bytes:
    """A 1x1 PNG whose header claims `size` pixels: opening it costs nothing, decoding it would."""
    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    body = b"IHDR" + struct.pack(">II", *size) + bytes(data[24:29])
    data[12:29] = body
    data[29:33] = struct.pack(">I", zlib.crc32(body))
    return bytes(data)


# --- item 1: acn-predict never destroys its input, and keeps its fields -------------------------


@pytest.mark.bad_input("`acn-predict --input X --output X`", "refused before anything is written; X is unchanged")
def test_predict_refuses_to_write_over_its_input(model_folder, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "Obama visits Paris"}\n', encoding="utf-8")
    before = rows.read_bytes()
    with pytest.raises(ValueError, match=r"--output '.*rows.jsonl' is the --input file"):
        predict.run(predict_args(model_folder, rows, rows))
    assert rows.read_bytes() == before


@pytest.mark.bad_input(
    "`acn-predict` killed or failing half way", "the earlier output file stays whole; no partial or temporary file"
)
def test_failed_predict_run_leaves_the_earlier_output_whole(model_folder, tmp_path, monkeypatch):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"Obama visits Paris {i}"}) + "\n" for i in range(5)), encoding="utf-8")
    output = tmp_path / "out.jsonl"
    output.write_text("earlier results\n", encoding="utf-8")
    tag, calls = predict.RowTagger.tag, []

    def failing_after_one_batch(*args):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt  # as a user's Ctrl-C between two batches
        return tag(*args)

    monkeypatch.setattr(predict.RowTagger, "tag", failing_after_one_batch)
    with pytest.raises(KeyboardInterrupt):
        predict.run(predict_args(model_folder, rows, output, "--batch_size", "2"))
    assert output.read_text(encoding="utf-8") == "earlier results\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.jsonl", "rows.jsonl"]


@pytest.mark.bad_input(
    "input rows with extra fields (`id`, `label`, a field named `tags`)",
    "every field is kept in the output line; one named like an output field becomes `input_<name>`",
)
def test_predict_keeps_every_input_field(model_folder, tmp_path):
    jsonl = tmp_path / "rows.jsonl"
    records = [{"id": 7, "text": "Obama visits Paris", "label": ["x"], "tags": "gold"}, {"id": 8, "text": "  "}]
    jsonl.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    predict.run(predict_args(model_folder, jsonl, tmp_path / "out.jsonl"))
    tagged, failed = output_lines(tmp_path / "out.jsonl")
    assert (tagged["id"], tagged["label"], tagged["input_tags"], len(tagged["tags"])) == (7, ["x"], "gold", 3)
    assert failed["id"] == 8 and "text has no words" in failed["error"]

    csv_file = tmp_path / "rows.csv"
    csv_file.write_text("id,text,source\n1,Obama visits Paris,web\n", encoding="utf-8")
    predict.run(predict_args(model_folder, csv_file, tmp_path / "out_csv.jsonl"))
    (line,) = output_lines(tmp_path / "out_csv.jsonl")
    assert (line["id"], line["source"], line["words"]) == ("1", "web", ["Obama", "visits", "Paris"])


# --- item 4: a 16-bit image gives the same pixels on every path ----------------------------------


@pytest.mark.bad_input(
    "a 16-bit grayscale PNG (`I;16`)",
    "scaled to 8 bits the same way by the corpus loader, `acn-predict` and `AcnImageProcessor`",
)
def test_sixteen_bit_png_is_read_alike_on_every_path(tmp_path):
    pixels = np.full((4, 6), SIXTEEN_BIT_VALUE, dtype=np.uint16)
    (tmp_path / "1.jpg").write_bytes(encode(Image.fromarray(pixels), "PNG"))
    loaded = read_image(tmp_path, "1")
    from_loader = Image.open(io.BytesIO(loaded.image["bytes"]))
    from_predict = predict.open_image(tmp_path / "1.jpg")
    assert from_loader.getpixel((0, 0)) == from_predict.getpixel((0, 0)) == (100, 100, 100)
    processor = AcnImageProcessor()
    through_processor = processor(str(tmp_path / "1.jpg"))["pixel_values"]
    assert torch.equal(through_processor, processor(from_loader)["pixel_values"])
    assert torch.equal(through_processor, processor(from_predict)["pixel_values"])


# --- item 5: CSV quoting, byte-order marks, bytes that are not UTF-8 -----------------------------


@pytest.mark.bad_input(
    "a CSV with an unterminated quote", "`acn-predict` stops with `file:line: malformed CSV record`, line of the record"
)
def test_csv_with_an_unterminated_quote_fails_naming_the_line(tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text('text,image\nObama visits Paris,\n"Merkel in Berlin,\nline three,\nline four,\n', encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^{rows}:3: malformed CSV record"):
        list(predict.read_rows(rows, None))


@pytest.mark.bad_input(
    "a CSV with more fields than its header", "that row gets `error`: `file:line: 3 fields, but the header has 2`"
)
def test_csv_row_with_extra_fields_is_a_row_error(tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("text,image\nObama, visits Paris,\nMerkel,\n", encoding="utf-8")
    first, second = predict.read_rows(rows, None)
    assert first.error == f"{rows}:2: 3 fields, but the header has 2 (an unquoted comma?)"
    assert second.error is None and second.text == "Merkel"


@pytest.mark.bad_input(
    "a CSV or JSONL file starting with a UTF-8 byte-order mark", "read as without it: header found, first row tagged"
)
@pytest.mark.parametrize(
    "suffix, text",
    [(".csv", "text,id\nObama visits Paris,1\n"), (".jsonl", '{"text": "Obama visits Paris", "id": "1"}\n')],
)
def test_byte_order_mark_is_dropped(tmp_path, suffix, text):
    rows = tmp_path / f"rows{suffix}"
    rows.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    (row,) = predict.read_rows(rows, None)
    assert (row.error, row.text, row.source["id"]) == (None, "Obama visits Paris", "1")


@pytest.mark.bad_input(
    "a JSONL or CSV file with bytes that are not UTF-8", "stops with `file:line: byte 0x.. is not valid UTF-8`"
)
@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_bytes_that_are_not_utf8_name_the_line(tmp_path, suffix):
    rows = tmp_path / f"rows{suffix}"
    rows.write_bytes(b'text\n"ok"\n' + b'"caf\xe9"\n' if suffix == ".csv" else b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    line = 3 if suffix == ".csv" else 2
    with pytest.raises(ValueError, match=rf"^{rows}:{line}: byte 0xe9 is not valid UTF-8"):
        list(predict.read_rows(rows, None))


# --- item 6: the exporter deletes only what it wrote ---------------------------------------------


@pytest.mark.bad_input(
    "`twitter_mner.py --overwrite` on a folder holding the user's own files",
    "only the earlier export's shards are replaced or removed; other files stay",
)
def test_export_overwrite_keeps_files_it_did_not_write(tmp_path):
    dataset = load_twitter_mner(write_corpus(tmp_path / "corpus"))
    folder = tmp_path / "export"
    (folder / "data").mkdir(parents=True)
    notes, own_parquet = folder / "data" / "notes.txt", folder / "data" / "train-my-own.parquet"
    stale = folder / "data" / "train-00001-of-00002.parquet"
    for path in (notes, own_parquet, stale, folder / "keep.md"):
        path.write_text("the user's", encoding="utf-8")
    export_parquet(dataset, folder, source="fixture", corpus="twitter-2015", overwrite=True)
    assert not stale.exists()
    assert all(path.read_text() == "the user's" for path in (notes, own_parquet, folder / "keep.md"))
    assert sorted(path.name for path in (folder / "data").iterdir() if path.name.endswith("-of-00001.parquet")) == [
        "test-00000-of-00001.parquet",
        "train-00000-of-00001.parquet",
        "validation-00000-of-00001.parquet",
    ]
    assert not [path for path in folder.rglob(".*")]  # no temporary file left behind


@pytest.mark.bad_input(
    "`twitter_mner.py cache-features --output_dir` naming a folder with other files",
    "refused before the features are computed, naming the files; its own earlier output is replaced whole",
)
def test_feature_cache_output_never_replaces_foreign_files(tmp_path):
    folder = tmp_path / "features"
    folder.mkdir()
    for name in ("dataset_dict.json", "train", "vgg16_trunk.safetensors"):
        (folder / name).write_text("an earlier cache-features output")
    check_features_output_dir(folder, ["train", "validation", "test"])
    (folder / "notes.txt").write_text("the user's")
    with pytest.raises(
        ValueError, match=r"holds files cache-features did not write \(notes.txt\); choose a new folder"
    ):
        check_features_output_dir(folder, ["train", "validation", "test"])


# --- item 8: FIFOs, slow images, NaN features, empty words, huge images, None text ---------------


def finishes_within(seconds: float, function):
    """Run `function` in a daemon thread: its result or error, or a failure if it hangs (the old code did)."""
    outcome = {}

    def target():
        try:
            outcome["value"] = function()
        except Exception as error:
            outcome["error"] = error

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s"
    return outcome


@pytest.mark.bad_input("an image path that is a FIFO", "that row gets `error`: `... not a regular file`, at once")
def test_fifo_image_is_refused_without_waiting(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    outcome = finishes_within(10, lambda: predict.open_image(tmp_path / "pipe.jpg"))
    assert isinstance(outcome.get("error"), predict.RowError)
    assert "pipe.jpg: not a regular file" in str(outcome["error"])
    assert read_image(tmp_path, "pipe").problem.value == "not a regular file"


@pytest.mark.bad_input(
    "an image that takes longer than the timeout to read", "refused as `timed out` (30 s on every path)"
)
def test_slow_image_times_out(tmp_path, monkeypatch):
    striped_image().save(tmp_path / "slow.png")
    decode = image_processing_acn.decode_image_bytes

    def slow_decode(*args):
        time.sleep(2)
        return decode(*args)

    monkeypatch.setattr(image_processing_acn, "decode_image_bytes", slow_decode)
    with pytest.raises(image_processing_acn.AcnImageError, match="slow.png: reading and decoding took more than 0.1 s"):
        image_processing_acn.load_image_file(tmp_path / "slow.png", timeout=0.1)


@pytest.mark.bad_input(
    "image features with NaN (pipeline input or feature cache)",
    "the pipeline raises `image features hold N NaN or infinite values`; in `acn-predict` that row gets `error`",
)
def test_nan_image_features_are_refused(pipe, model_folder, tmp_path):
    features = torch.rand(49, 512)
    features[3, 7] = float("nan")
    with pytest.raises(ValueError, match="image features hold 1 NaN or infinite values"):
        pipe("Obama visits Paris", image=features)
    (tmp_path / "test.txt").write_text(corpus_text([("101", [("Obama", "B-PER")]), ("102", [("Paris", "B-LOC")])]))
    cache = Dataset.from_dict(
        {
            "image_id": ["101", "102"],
            "image_features": torch.stack([features, torch.rand(49, 512)]).half().numpy(),
            "image_mask": [True, True],
        }
    )
    DatasetDict({"test": cache}).save_to_disk(str(tmp_path / "cache"))
    predict.run(
        predict_args(
            model_folder, tmp_path / "test.txt", tmp_path / "out.jsonl", "--feature_cache", str(tmp_path / "cache")
        )
    )
    nan_row, good_row = output_lines(tmp_path / "out.jsonl")
    assert nan_row["error"] == f"{tmp_path / 'test.txt'}:1: image features hold 1 NaN or infinite values"
    assert "error" not in good_row and all(np.isfinite(good_row["scores"]))


@pytest.mark.bad_input("an empty word in `is_split_into_words` input", "`ValueError: example 0: word 1 is empty`")
def test_empty_pre_split_word_is_refused(pipe):
    with pytest.raises(ValueError, match=r"example 0: word 1 is empty"):
        pipe(["Obama", "", "Paris"], is_split_into_words=True)


@pytest.mark.bad_input(
    "a 150-megapixel image given to the pipeline (path or PIL image)",
    "refused like the loader and `acn-predict` do: `15000x10000 pixels exceed max_pixels=33554432`",
)
def test_huge_image_is_refused_by_the_pipeline_too(pipe, tmp_path):
    (tmp_path / "huge.jpg").write_bytes(png_claiming(MEGAPIXELS_150))
    message = r"15000x10000 pixels exceed max_pixels=33554432"
    with pytest.raises(ValueError, match=message):
        pipe("Obama visits Paris", image=str(tmp_path / "huge.jpg"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # PIL's own warning as the test opens it
        lazily_opened = Image.open(tmp_path / "huge.jpg")  # size known, nothing decoded
    with pytest.raises(ValueError, match=message):
        pipe("Obama visits Paris", image=lazily_opened)
    assert read_image(tmp_path, "huge").problem.value == "too large"
    with pytest.raises(predict.RowError, match=message):
        predict.open_image(tmp_path / "huge.jpg")


@pytest.mark.bad_input(
    "an image of a mode without a faithful RGB view (32-bit float `F`)", "refused as `unsupported mode` on every path"
)
def test_float_image_mode_is_refused(pipe, tmp_path):
    encode_float = Image.fromarray(np.ones((4, 4), dtype=np.float32))
    encode_float.save(tmp_path / "float.tiff")
    (tmp_path / "float.jpg").write_bytes((tmp_path / "float.tiff").read_bytes())
    with pytest.raises(ValueError, match="image mode 'F' is not one of"):
        pipe("Obama visits Paris", image=encode_float)
    assert read_image(tmp_path, "float").problem.value == "unsupported mode"


@pytest.mark.bad_input(
    "`None` as the pipeline's text, with `image=`", "`ValueError: image= goes with a tweet ..., got None`"
)
def test_none_text_with_an_image_names_the_text(pipe):
    with pytest.raises(ValueError, match=r"image= goes with a tweet \(a string, or a list of words .*\), got None"):
        pipe(None, image=striped_image())


@pytest.mark.bad_input("`acn-explain --output` naming its own `--image`", "refused; the image is unchanged")
def test_explain_refuses_to_write_over_its_image(tmp_path):
    striped_image().save(tmp_path / "photo.png")
    before = (tmp_path / "photo.png").read_bytes()
    with pytest.raises(ValueError, match=r"--output '.*photo.png' is the --image file"):
        explain.main(
            [
                "--model",
                "unused",
                "--text",
                "hi",
                "--image",
                str(tmp_path / "photo.png"),
                "--output",
                str(tmp_path / "photo.png"),
            ]
        )
    assert (tmp_path / "photo.png").read_bytes() == before


def test_reliability_table_lists_exactly_the_bad_input_tests(tmp_path):
    """docs/reliability.md's table is the one the marked tests produce (collected here; `make reliability-table` runs
    them)."""
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import RELIABILITY_TABLE_END, RELIABILITY_TABLE_START

    root = Path(__file__).resolve().parents[1]
    table = tmp_path / "table.md"
    collected = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-m",
            "bad_input",
            "-p",
            "no:cacheprovider",
            "--reliability-table",
            str(table),
            "tests",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert collected.returncode == 0, collected.stdout[-3000:]
    document = (root / "docs" / "reliability.md").read_text(encoding="utf-8")
    in_document = document.split(RELIABILITY_TABLE_START, 1)[1].split(RELIABILITY_TABLE_END, 1)[0].strip()
    assert in_document == table.read_text(encoding="utf-8").strip(), (
        "docs/reliability.md is stale: run `make reliability-table`"
    )
    assert "| `acn-predict --input X --output X` | refused" in in_document  # the table is not empty


@pytest.mark.bad_input(
    "a file that is no image format at all", "refused as `corrupt`, with the same message on every run"
)
def test_unidentified_image_message_names_the_file_and_no_memory_address(tmp_path):
    (tmp_path / "notes.jpg").write_bytes(b"these are not pixels")
    messages = set()
    for _ in range(2):
        with pytest.raises(image_processing_acn.AcnImageError) as raised:
            image_processing_acn.load_image_file(tmp_path / "notes.jpg")
        messages.add(str(raised.value))
    assert messages == {f"{tmp_path / 'notes.jpg'}: cannot decode (not an image format PIL can read)"}
