"""acn-predict rows that once ended the whole run: numbers, nesting and encodings JSON parsers choke on, and outputs
that are not JSON. Each is now its row's error (or, for lone surrogates, an escaped string), the run goes on, and the
output is strict JSON. Each test is a row of docs/reliability.md's table."""

import json

import pytest

from acn_mner import predict

GOOD = json.dumps({"text": "Obama visits Paris"})


def run(model_folder, tmp_path, lines: list[str]) -> list[dict]:
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    output = tmp_path / "out.jsonl"
    predict.main(["--model", str(model_folder), "--input", str(rows), "--output", str(output), "--device", "cpu"])
    text = output.read_text(encoding="utf-8")
    return [json.loads(line, parse_constant=predict.refuse_constant) for line in text.splitlines()]  # strict JSON


@pytest.mark.bad_input(
    "acn-predict rows with a 5,000-digit integer, JSON nested 100,000 deep, or `NaN`/`Infinity`",
    "each is that row's error naming it; the rows around it are tagged",
)
def test_numbers_and_nesting_json_parsers_choke_on_are_row_errors(model_folder, tmp_path):
    bad = [
        '{"text": "Obama", "id": ' + "9" * 5000 + "}",
        '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"text": "Obama", "score": NaN}',
        '{"text": "Obama", "score": -Infinity}',
    ]
    lines = run(model_folder, tmp_path, [GOOD, *bad, GOOD])
    assert [line["row"] for line in lines] == list(range(6))
    assert "error" not in lines[0] and "error" not in lines[5]
    assert "4300 digits" in lines[1]["error"]
    assert "nested too deeply" in lines[2]["error"]
    assert "NaN is not a JSON number" in lines[3]["error"] and "-Infinity is not a JSON number" in lines[4]["error"]


@pytest.mark.bad_input(
    'a lone surrogate (`"\\ud800"`) in a row\'s text or another field',
    "the row is tagged and written with the surrogate escaped (`\\ud800`), valid JSON in valid UTF-8",
)
def test_lone_surrogates_are_written_escaped(model_folder, tmp_path):
    lines = run(model_folder, tmp_path, ['{"text": "Obama \\ud800 visits Paris", "note": "\\udfff"}', GOOD])
    assert "error" not in lines[0] and lines[0]["note"] == "\udfff" and lines[0]["text"] == "Obama \ud800 visits Paris"
    raw = (tmp_path / "out.jsonl").read_bytes().decode("utf-8")  # valid UTF-8
    assert "\\ud800" in raw and "\\udfff" in raw


def test_an_output_that_cannot_be_json_becomes_its_rows_error():
    text, line = predict.strict_json({"row": 3, "entities": [], "scores": [float("nan")]})
    assert line == {
        "row": 3,
        "error": "row 3: the output cannot be written as JSON (Out of range float values are not JSON compliant)",
    }
    assert json.loads(text) == line
