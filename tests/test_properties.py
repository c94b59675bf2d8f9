"""Property-based tests (Hypothesis) of the corpus parser and acn-predict's inputs: arbitrary text, tags and
bytes either parse to exactly what was written or fail with a message naming the file and line."""

import csv
import io
import json
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acn_mner import predict
from acn_mner.corpus import CorpusFormatError, read_split_file
from tests.pipeline_fixtures import tiny_pipeline

PARSER_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
PIPELINE_SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

text = st.text(st.characters(exclude_categories=("Cs",)))  # any Unicode string (no lone surrogates: not UTF-8)
token = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\t\n"), min_size=1)
image_id = token.filter(lambda value: value.strip() == value and not value.endswith(".jpg"))
tag = st.one_of(st.just("O"), st.from_regex(r"[BI]-\w+", fullmatch=True).filter(lambda value: "\n" not in value))
tweet = st.tuples(image_id, st.lists(st.tuples(token, tag), min_size=1, max_size=6))
# lines that look like the corpus, so that random files reach past the first check
corpus_line = st.one_of(
    st.just(""), st.builds("IMGID:{}".format, text), st.builds("{}\t{}".format, text, tag), text, st.just("\ufeff")
)
LOCATION = re.compile(r"^(?P<path>.+?):(?P<line>\d+): ")


def assert_names_a_line(message: str, path, data: bytes) -> None:
    match = LOCATION.match(message)
    assert match and match["path"] == str(path), message
    assert 1 <= int(match["line"]) <= data.count(b"\n") + 1, message


# --- the corpus parser -------------------------------------------------------------------------


@PARSER_SETTINGS
@given(tweets=st.lists(tweet, min_size=1, max_size=5), bom=st.booleans(), newline=st.sampled_from(["\n", "\r\n"]))
def test_corpus_round_trip(tmp_path, tweets, bom, newline):
    lines = []
    for identifier, pairs in tweets:
        lines += [f"IMGID:{identifier}"] + [f"{word}\t{label}" for word, label in pairs] + [""]
    path = tmp_path / "split.txt"
    path.write_bytes(("\ufeff" if bom else "").encode() + newline.join(lines).encode("utf-8"))
    parsed = read_split_file(path)
    assert [(t.image_id, list(zip(t.tokens, t.tags, strict=True))) for t in parsed] == tweets
    starts = [
        index + 1
        for index, line in enumerate(lines)
        if line.startswith("IMGID:") and (index == 0 or lines[index - 1] == "")
    ]
    assert [t.line for t in parsed] == starts


@PARSER_SETTINGS
@given(
    data=st.one_of(st.binary(max_size=200), st.lists(corpus_line, max_size=12).map(lambda ls: "\n".join(ls).encode()))
)
def test_corpus_parser_on_arbitrary_bytes(tmp_path, data):
    path = tmp_path / "split.txt"
    path.write_bytes(data)
    try:
        parsed = read_split_file(path)
    except CorpusFormatError as error:
        assert_names_a_line(str(error), path, data)
        return
    lines = data.decode("utf-8").removeprefix("\ufeff").split("\n")
    for t in parsed:  # every tweet is what its lines say, at the lines it names
        assert lines[t.line - 1].rstrip("\r").startswith("IMGID:")
        for index, (word, label) in enumerate(zip(t.tokens, t.tags, strict=True)):
            written, _, written_tag = lines[t.line + index].rstrip("\r").partition("\t")
            assert (word, label) == (written, written_tag.strip())


# --- acn-predict's inputs ----------------------------------------------------------------------

extra_key = st.text(min_size=1, max_size=8).filter(lambda key: key not in ("text", "image", "image_id"))
json_value = st.one_of(st.none(), st.booleans(), st.integers(), text, st.lists(st.integers(), max_size=3))
record = st.builds(
    lambda words, extra: {"text": words, **extra}, text, st.dictionaries(extra_key, json_value, max_size=3)
)


@PARSER_SETTINGS
@given(records=st.lists(record, min_size=1, max_size=5), ascii_only=st.booleans(), bom=st.booleans())
def test_jsonl_round_trip(tmp_path, records, ascii_only, bom):
    path = tmp_path / "rows.jsonl"
    body = "".join(json.dumps(r, ensure_ascii=ascii_only) + "\n" for r in records)
    path.write_bytes(("\ufeff" if bom else "").encode() + body.encode("utf-8"))
    rows = list(predict.read_rows(path, None))
    assert [(row.error, row.text, row.source) for row in rows] == [(None, r["text"], r) for r in records]
    assert [row.location for row in rows] == [f"{path}:{line}" for line in range(1, len(records) + 1)]


column = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=8)
cell = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=20)


@PARSER_SETTINGS
@given(
    columns=st.lists(column.filter(lambda name: name != "text"), max_size=3, unique=True),
    cells=st.lists(st.lists(cell, min_size=4, max_size=4), min_size=1, max_size=5),
    bom=st.booleans(),
)
def test_csv_round_trip(tmp_path, columns, cells, bom):
    header = ["text"] + columns
    records = [dict(zip(header, values[: len(header)], strict=True)) for values in cells]
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows([[r[name] for name in header] for r in records])
    path = tmp_path / "rows.csv"
    path.write_bytes(("\ufeff" if bom else "").encode() + buffer.getvalue().encode("utf-8"))
    rows = list(predict.read_rows(path, None))
    assert [(row.error, row.text, row.source) for row in rows] == [(None, r["text"], r) for r in records]


@PARSER_SETTINGS
@given(data=st.binary(max_size=200), suffix=st.sampled_from([".jsonl", ".csv"]))
def test_predict_inputs_on_arbitrary_bytes(tmp_path, data, suffix):
    path = tmp_path / f"rows{suffix}"
    path.write_bytes(data)
    try:
        rows = list(predict.read_rows(path, None))
    except ValueError as error:
        assert_names_a_line(str(error), path, data)
        return
    for row in rows:
        assert_names_a_line(row.location + ": ", path, data)
        if row.error is not None:
            assert row.error.startswith(f"{row.location}: ")


def test_arbitrary_tweets_through_acn_predict(tmp_path):
    pipe = tiny_pipeline()

    @PIPELINE_SETTINGS
    @given(texts=st.lists(text, min_size=1, max_size=4))
    def check(texts):
        path = tmp_path / "rows.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
        tagger = predict.RowTagger(pipe, {}, is_split_into_words=False)
        lines = [line for batch in predict.row_batches(path, None, 2) for line in tagger.tag(tagger.prepare(batch))]
        for number, (t, line) in enumerate(zip(texts, lines, strict=True), start=1):
            words, offsets = pipe.processor.tokenizer.split_text(t)
            assert line["text"] == t and line["row"] == number - 1
            if not words:
                assert line["error"] == f"{path}:{number}: text has no words: {t!r}"
                continue
            assert line["words"] == words and [tuple(o) for o in line["offsets"]] == offsets
            assert len(line["tags"]) == len(words) and all(0.0 <= s <= 1.0 + 1e-6 for s in line["scores"])
            assert all(t[e["start"] : e["end"]] == e["word"] for e in line["entities"])

    check()
