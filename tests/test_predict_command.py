"""acn-predict: JSONL, CSV and corpus inputs in order with per-row errors, the feature cache, worker processes, lazy
reading, and two processes under accelerate launch."""

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict

from acn_mner.predict import main, parse_args, read_rows, run
from modeling_acn import AcnPipeline
from tests.corpus_fixtures import corpus_text
from tests.pipeline_fixtures import TWEET, striped_image
from tests.training_fixtures import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def loaded(model_folder):
    return AcnPipeline.from_pretrained(model_folder, device="cpu")


def read_lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def predict(model_folder, input_path, output_path, *extra):
    argv = ["--model", str(model_folder), "--input", str(input_path), "--output", str(output_path), "--device", "cpu"]
    return run(parse_args(argv + ["--batch_size", "2", *extra]))


def test_jsonl_rows_in_order_with_bad_rows_reported(model_folder, loaded, tmp_path):
    striped_image().save(tmp_path / "good.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    rows = [
        json.dumps({"text": TWEET, "image": "good.png"}),
        json.dumps({"text": "Merkel meets Obama"}),
        json.dumps({"text": "Obama in Paris", "image": "missing.jpg"}),
        json.dumps({"text": "   "}),
        "{not json",
        "",
        json.dumps({"text": "Berlin rocks", "image": "broken.jpg"}),
        json.dumps({"text": "Paris", "image": None}),
    ]
    (tmp_path / "rows.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    summary = predict(model_folder, tmp_path / "rows.jsonl", tmp_path / "out.jsonl")
    lines = read_lines(tmp_path / "out.jsonl")
    assert [line["row"] for line in lines] == list(range(7))  # the blank line is not a row
    assert [("error" in line) for line in lines] == [False, False, True, True, True, True, False]
    assert "cannot read image" in lines[2]["error"] and "missing.jpg" in lines[2]["error"]
    assert lines[3]["error"] == f"{tmp_path / 'rows.jsonl'}:4: text has no words: '   '"
    assert lines[4]["error"].startswith(f"{tmp_path / 'rows.jsonl'}:5: not JSON")
    assert "cannot read image" in lines[5]["error"] and "broken.jpg" in lines[5]["error"]
    expected = loaded([(TWEET, striped_image()), ("Merkel meets Obama", None), ("Paris", None)], return_tags=True)
    for line, result in zip([lines[0], lines[1], lines[6]], expected, strict=True):
        assert line["tags"] == result["tags"] and line["scores"] == pytest.approx(result["scores"], abs=1e-6)
        assert [entity["word"] for entity in line["entities"]] == [entity["word"] for entity in result["entities"]]
    assert lines[0]["text"] == TWEET and lines[0]["image"] == "good.png"
    entities = sum(len(line.get("entities", ())) for line in lines)
    assert summary == {"rows": 7, "tagged": 3, "errors": 4, "entities": entities}


def test_csv_rows_through_the_console_entry_point(model_folder, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    (tmp_path / "rows.csv").write_text('text,image\n"Obama, in Paris",\n,\nMerkel meets Obama,\n', encoding="utf-8")
    main(
        [
            "--model",
            str(model_folder),
            "--input",
            str(tmp_path / "rows.csv"),
            "--output",
            str(tmp_path / "o.jsonl"),
            "--device",
            "cpu",
        ]
    )
    lines = read_lines(tmp_path / "o.jsonl")
    assert [line.get("error") for line in lines] == [None, f"{tmp_path / 'rows.csv'}:3: text has no words: ''", None]
    assert lines[0]["words"] == ["Obama", ",", "in", "Paris"]
    assert "3 rows: 2 tagged" in caplog.text and "1 errors" in caplog.text


def test_corpus_layout_with_images_and_the_feature_cache(model_folder, loaded, tmp_path):
    tweets = [
        ("101", [("Obama", "B-PER"), ("visits", "O"), ("Paris", "B-LOC")]),
        ("102", [("Merkel", "B-PER"), ("in", "O"), ("Berlin", "B-LOC")]),
        ("103", [("no", "O"), ("picture", "O")]),
    ]
    (tmp_path / "test.txt").write_text(corpus_text(tweets), encoding="utf-8")
    images = tmp_path / "images"
    images.mkdir()
    striped_image().save(images / "101.jpg")
    striped_image((20, 60)).save(images / "102.jpg")
    predict(model_folder, tmp_path / "test.txt", tmp_path / "plain.jsonl", "--image_dir", str(images))
    plain = read_lines(tmp_path / "plain.jsonl")
    assert [line.get("error", "") for line in plain][:2] == ["", ""]
    assert "cannot read image" in plain[2]["error"] and plain[2]["image_id"] == "103"
    assert plain[0]["text"] == "Obama visits Paris" and plain[0]["words"] == ["Obama", "visits", "Paris"]

    features = torch.rand(2, 49, 512, generator=torch.Generator().manual_seed(0)) * 3  # (tweets, regions, 512)
    cache = Dataset.from_dict(
        {"image_id": ["101", "103"], "image_features": features.half().numpy(), "image_mask": [True, False]}
    )
    DatasetDict({"test": cache, "train": cache}).save_to_disk(str(tmp_path / "cache"))
    extra = ["--image_dir", str(images), "--feature_cache", str(tmp_path / "cache"), "--feature_split", "test"]
    predict(model_folder, tmp_path / "test.txt", tmp_path / "cached.jsonl", *extra)
    cached = read_lines(tmp_path / "cached.jsonl")
    assert not any("error" in line for line in cached)  # 103 is cached as a tweet without image
    expected = loaded(
        [(["Obama", "visits", "Paris"], features[0].half().float()), (["no", "picture"], None)],
        is_split_into_words=True,
        return_tags=True,
    )
    for line, result in zip([cached[0], cached[2]], expected, strict=True):
        assert line["tags"] == result["tags"] and line["scores"] == pytest.approx(result["scores"], abs=1e-6)
    assert cached[1]["scores"] == pytest.approx(plain[1]["scores"], abs=1e-6)  # not cached: read from its file


def test_predict_errors_name_the_problem(model_folder, tmp_path):
    (tmp_path / "rows.tsv").write_text("x\n")
    with pytest.raises(ValueError, match=r"cannot tell the format of '.*rows.tsv': use .jsonl, .csv or .txt"):
        predict(model_folder, tmp_path / "rows.tsv", tmp_path / "out.jsonl")
    (tmp_path / "rows.csv").write_text("tweet,image\nhello,\n")
    with pytest.raises(ValueError, match=r"a CSV input needs a 'text' column, got columns \['tweet', 'image'\]"):
        predict(model_folder, tmp_path / "rows.csv", tmp_path / "out.jsonl")
    (tmp_path / "ok.jsonl").write_text('{"text": "hi"}\n')
    Dataset.from_dict({"image_id": ["1"]}).save_to_disk(str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=r"lacks columns \['image_features', 'image_mask'\]"):
        predict(model_folder, tmp_path / "ok.jsonl", tmp_path / "out.jsonl", "--feature_cache", str(tmp_path / "cache"))


def mixed_rows(folder, count):
    """`count` JSONL rows with an `id`, images of three sizes, rows without image, and a few that fail."""
    for number, size in enumerate([(48, 32), (20, 60), (300, 200)]):
        striped_image(size).save(folder / f"{number}.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    images = ["0.png", None, "1.png", "2.png", "broken.jpg", None, "missing.jpg"]
    texts = [TWEET, "Merkel meets Obama", "Obama in Paris", "  ", "Berlin rocks", "Paris", "New York , New York"]
    rows = [
        {"id": f"t{number}", "text": texts[number % len(texts)], "image": images[number % len(images)]}
        for number in range(count)
    ]
    (folder / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return folder / "rows.jsonl"


def without_addresses(text):
    """PIL names an unidentified in-memory file by its object's address, which differs between runs."""
    return re.sub(r" at 0x[0-9a-f]+>", ">", text)


def test_worker_processes_give_the_same_lines_as_the_main_process(model_folder, tmp_path):
    rows = mixed_rows(tmp_path, 20)  # batches of 3: seven, the last short; 4 + 3 over two workers, 3 + 2 + 2 over three
    outputs = {}
    for workers in ("0", "2", "3"):
        predict(model_folder, rows, tmp_path / f"out{workers}.jsonl", "--batch_size", "3", "--num_workers", workers)
        outputs[workers] = without_addresses((tmp_path / f"out{workers}.jsonl").read_text(encoding="utf-8"))
    assert outputs["0"] == outputs["2"] == outputs["3"]
    lines = [json.loads(line) for line in outputs["0"].splitlines()]
    assert [(line["row"], line["id"]) for line in lines] == [(number, f"t{number}") for number in range(20)]
    assert [line["row"] for line in lines if "error" in line] == [
        3,
        4,
        6,
        10,
        11,
        13,
        17,
        18,
    ]  # no words, broken, missing
    assert sum("tags" in line for line in lines) == 12


def test_unreadable_file_in_a_worker_names_the_line(model_folder, tmp_path):
    """A worker process that cannot read the input on hands the error over: the message is the reader's own."""
    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(b"".join(b'{"text": "Obama visits Paris"}\n' for _ in range(4)) + b'{"text": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=rf"^{rows}:5: byte 0xe9 is not valid UTF-8$"):
        predict(model_folder, rows, tmp_path / "out.jsonl", "--num_workers", "2", "--batch_size", "1")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["rows.jsonl"]


@pytest.mark.parametrize(
    "name, good, bad",
    [
        ("rows.jsonl", b'{"text": "Obama visits Paris"}\n', b'{"text": "caf\xe9"}\n'),
        ("rows.csv", b"text\nObama visits Paris\n", b'"unterminated\n'),
        ("test.txt", corpus_text([("1", [("Obama", "B-PER")])]).encode(), b"\nno image id line\n"),
    ],
)
def test_rows_are_read_lazily(tmp_path, name, good, bad):
    """The first row comes before the reading reaches a broken part of the file: nothing is read ahead whole."""
    path = tmp_path / name
    path.write_bytes(good + bad)
    rows = read_rows(path, None)
    assert next(rows).text in ("Obama visits Paris", ["Obama"])
    with pytest.raises(ValueError, match=rf"^{path}:\d+: "):
        next(rows)


@pytest.mark.slow
def test_two_process_accelerate_launch_merges_in_input_order(model_folder, tmp_path):
    """Two real processes (CPU, as the README's launch command) tag alternate batches; the merged output is the
    single-process output, and no part file stays behind."""
    rows = mixed_rows(tmp_path, 11)
    flags = ["--model", str(model_folder), "--input", str(rows), "--batch_size", "2", "--num_workers", "1"]
    predict(model_folder, rows, tmp_path / "single.jsonl", "--batch_size", "2", "--num_workers", "0")
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--main_process_port",
        str(free_port()),
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(ROOT / "tests" / "predict_probe.py"),
        str(probe_dir),
        *flags,
        "--output",
        str(tmp_path / "merged.jsonl"),
    ]
    environment = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment, cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr[-3000:]
    ranks = [json.loads((probe_dir / f"rank_{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks[0]["pid"] != ranks[1]["pid"]
    assert ranks[0]["batches"] == [[0, 1], [4, 5], [8, 9]] and ranks[1]["batches"] == [[2, 3], [6, 7], [10]]
    merged = without_addresses((tmp_path / "merged.jsonl").read_text(encoding="utf-8"))
    assert merged == without_addresses((tmp_path / "single.jsonl").read_text(encoding="utf-8"))
    assert "6 tagged" in finished.stderr or "7 tagged" in finished.stderr
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith(".")]


def test_rows_without_images_are_prepared_in_one_processor_call_per_batch(model_folder, loaded, tmp_path, monkeypatch):
    from modeling_acn.processing_acn import AcnProcessor

    texts = [TWEET, "Merkel meets Obama", "Paris", "Obama visits Paris today", "Berlin", "   ", "Rome"]
    rows = [json.dumps({"text": text}) for text in texts]
    (tmp_path / "rows.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    calls = []
    original = AcnProcessor.__call__

    def counted(self, text, *args, **kwargs):
        calls.append(text)
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(AcnProcessor, "__call__", counted)
    predict(model_folder, tmp_path / "rows.jsonl", tmp_path / "out.jsonl", "--batch_size", "3")
    monkeypatch.undo()
    assert calls == [texts[0:3], texts[3:5], texts[6:7]]  # the row without words is refused before
    lines = read_lines(tmp_path / "out.jsonl")
    assert lines[5]["error"] == f"{tmp_path / 'rows.jsonl'}:6: text has no words: '   '"
    tagged = [line for line in lines if "error" not in line]
    expected = [loaded(text, return_tags=True) for text in texts if text.strip()]
    for line, result in zip(tagged, expected, strict=True):
        assert line["tags"] == result["tags"] and line["scores"] == pytest.approx(result["scores"], abs=1e-6)
        assert [{**entity, "score": round(entity["score"], 5)} for entity in line["entities"]] == [
            {**entity, "score": round(entity["score"], 5)} for entity in result["entities"]
        ]
