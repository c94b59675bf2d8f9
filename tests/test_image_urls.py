"""Image URLs (http:// and https://) wherever an image path goes, against a server on 127.0.0.1 in a thread, reached
with `allow_private_urls` (the URL policy refuses loopback otherwise: tests/test_url_policy.py): the image
processor, the pipeline and acn-predict get a good image's pixels, and a slow server, an HTTP error, an oversized or
non-image body fail that image alone, with the URL and the reason, within the timeout; every failure that is not a
limit of ours has the one message of the URL policy, which does not tell what the address held."""

import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from acn_mner.predict import image_stem, parse_args, run
from modeling_acn import AcnPipeline
from modeling_acn.image_processing_acn import (
    AcnImageError,
    AcnImageProcessor,
    is_image_url,
    load_image_file,
    load_image_url,
)
from modeling_acn.url_policy_acn import UNAVAILABLE
from tests.http_fixtures import GIVE_UP_SECONDS, GOOD_PNG, ROUTES, SHORT_TIMEOUT, SMALL_LIMIT, image_server
from tests.pipeline_fixtures import TWEET, striped_image, tiny_pipeline
from tests.training_fixtures import free_port


@pytest.fixture(scope="module")
def server():
    with image_server() as base:
        yield base


def decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


# --- the loader and the image processor --------------------------------------------------------


@pytest.mark.parametrize(
    "image, expected",
    [
        ("http://host/a.jpg", True),
        ("HTTPS://host/a.jpg", True),
        ("http:/a.jpg", False),
        ("www.host.com/a.jpg", False),
        ("photos/http://a.jpg", False),
        (Path("http://host/a.jpg"), False),
        (None, False),
    ],
)
def test_only_http_and_https_strings_are_urls(image, expected):
    assert is_image_url(image) is expected


def test_a_url_gives_the_image_and_bytes_a_file_gives(server, tmp_path):
    (tmp_path / "alpha.png").write_bytes(ROUTES["/alpha.png"].body)
    image, data = load_image_url(f"{server}/alpha.png", allow_private_urls=True)
    from_file, file_data = load_image_file(tmp_path / "alpha.png")
    assert data == file_data and image.mode == from_file.mode == "RGBA"
    assert np.array_equal(np.asarray(image), np.asarray(from_file))


def test_the_processor_reads_urls_as_it_reads_files(server, tmp_path):
    names = ["alpha.png", "rotated.jpg", "good.png"]
    for name in names:
        (tmp_path / name).write_bytes(ROUTES[f"/{name}"].body)
    processor = AcnImageProcessor()
    from_urls = processor([f"{server}/{name}" for name in names] + [None], allow_private_urls=True)
    from_files = processor([str(tmp_path / name) for name in names] + [None])
    assert torch.equal(from_urls["pixel_values"], from_files["pixel_values"])  # alpha on white, EXIF rotation
    assert from_urls["image_mask"].tolist() == [True, True, True, False]


def test_a_query_string_is_part_of_the_url(server):
    image, _ = load_image_url(f"{server}/photo.png?size=large", allow_private_urls=True)
    assert image.size == striped_image().size


@pytest.mark.parametrize(
    "path, limits, reason, message",
    [
        ("/gone.png", {}, "download failed", r"/gone\.png: " + re.escape(UNAVAILABLE) + "$"),
        ("/nowhere.png", {}, "download failed", r"/nowhere\.png: " + re.escape(UNAVAILABLE) + "$"),
        ("/broken.png", {}, "download failed", r"/broken\.png: " + re.escape(UNAVAILABLE) + "$"),
        (
            "/slow.png",
            {"timeout": SHORT_TIMEOUT},
            "timed out",
            r"/slow\.png: downloading and decoding took more than 1 s",
        ),
        (
            "/drip.png",
            {"timeout": SHORT_TIMEOUT},
            "timed out",
            r"/drip\.png: downloading and decoding took more than 1 s",
        ),
        (
            "/huge.png",
            {"max_bytes": SMALL_LIMIT},
            "too large",
            r"/huge\.png: 5004 bytes exceed max_download_bytes=1000",
        ),
        (
            "/huge-unannounced.png",
            {"max_bytes": SMALL_LIMIT},
            "too large",
            r"/huge-unannounced\.png: more than max_download_bytes=1000 bytes",
        ),
        ("/page.html", {}, "download failed", r"/page\.html: " + re.escape(UNAVAILABLE) + "$"),
        ("/empty.png", {}, "empty file", r"/empty\.png: empty response body"),
        ("/bomb.png", {}, "too large", r"/bomb\.png: Image size \(10000000000 pixels\) exceeds limit"),  # PIL's own
        ("/good.png", {"max_pixels": 1000}, "too large", r"/good\.png: 48x32 pixels exceed max_pixels=1000"),
    ],
    ids=[
        "404",
        "unknown-path",
        "500",
        "slow",
        "drip",
        "too-large",
        "too-large-unannounced",
        "not-an-image",
        "empty",
        "decompression-bomb",
        "max-pixels",
    ],
)
def test_a_failing_url_names_itself_and_the_reason_in_time(server, path, limits, reason, message):
    start = time.monotonic()
    with pytest.raises(AcnImageError, match=r"^http://127\.0\.0\.1:\d+" + message) as error:
        load_image_url(f"{server}{path}", allow_private_urls=True, **limits)
    assert error.value.reason == reason
    assert time.monotonic() - start < GIVE_UP_SECONDS


def test_the_byte_limit_is_inclusive(server):
    load_image_url(f"{server}/good.png", max_bytes=len(GOOD_PNG), allow_private_urls=True)
    with pytest.raises(AcnImageError, match=f"max_download_bytes={len(GOOD_PNG) - 1}"):
        load_image_url(f"{server}/good.png", max_bytes=len(GOOD_PNG) - 1, allow_private_urls=True)


def test_no_server_is_a_failed_download():
    url = f"http://127.0.0.1:{free_port()}/photo.png"
    with pytest.raises(AcnImageError, match=rf"^{re.escape(url)}: {re.escape(UNAVAILABLE)}$") as error:
        load_image_url(url, timeout=SHORT_TIMEOUT, allow_private_urls=True)
    assert error.value.reason == "download failed"


def test_download_limits_are_processor_settings(server, tmp_path):
    limit = len(GOOD_PNG) - 1
    processor = AcnImageProcessor(download_timeout=SHORT_TIMEOUT, max_download_bytes=limit)
    processor.save_pretrained(tmp_path)
    reloaded = AcnImageProcessor.from_pretrained(tmp_path)
    assert (reloaded.download_timeout, reloaded.max_download_bytes) == (SHORT_TIMEOUT, limit)
    with pytest.raises(AcnImageError, match=f"max_download_bytes={limit}"):
        reloaded(f"{server}/good.png", allow_private_urls=True)
    downloaded = reloaded(f"{server}/good.png", max_download_bytes=len(GOOD_PNG), allow_private_urls=True)
    assert downloaded["image_mask"].tolist() == [True]
    with pytest.raises(AcnImageError, match="took more than 0.5 s"):
        reloaded(f"{server}/slow.png", download_timeout=0.5, allow_private_urls=True)


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: AcnImageProcessor(download_timeout=0),
            r"download_timeout must be a positive number of seconds, got 0",
        ),
        (
            lambda: AcnImageProcessor(download_timeout="10"),
            r"download_timeout must be a positive number of seconds, got '10'",
        ),
        (lambda: AcnImageProcessor(max_download_bytes=-1), r"max_download_bytes must be a positive int, got -1"),
        (
            lambda: AcnImageProcessor()(striped_image(), max_download_bytes=1.5),
            r"max_download_bytes must be a positive int, got 1\.5",
        ),
        (
            lambda: load_image_url("ftp://host/a.png"),
            r"url must start with http:// or https://, got 'ftp://host/a\.png'",
        ),
    ],
)
def test_bad_download_settings_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- the pipeline ------------------------------------------------------------------------------


def test_the_pipeline_tags_a_url_as_the_image_it_serves(server):
    pipe = tiny_pipeline()
    photo = decoded(GOOD_PNG)
    by_url = pipe(TWEET, image=f"{server}/good.png", return_tags=True, allow_private_urls=True)  # a loopback server
    by_image = pipe(TWEET, image=photo, return_tags=True)
    assert by_url["tags"] == by_image["tags"] and by_url["scores"] == pytest.approx(by_image["scores"], abs=1e-6)
    batch = pipe(
        [(TWEET, f"{server}/good.png"), {"text": "Obama in Paris", "image": None}],
        return_tags=True,
        allow_private_urls=True,
    )
    assert batch[0]["tags"] == by_image["tags"] and batch[1]["tags"] == pipe("Obama in Paris", return_tags=True)["tags"]


def test_the_pipeline_raises_a_failing_urls_error_within_its_processors_timeout(server):
    pipe = tiny_pipeline()
    with pytest.raises(AcnImageError, match=r"/gone\.png: " + re.escape(UNAVAILABLE)):
        pipe(TWEET, image=f"{server}/gone.png", allow_private_urls=True)
    pipe.processor.image_processor.download_timeout = SHORT_TIMEOUT
    start = time.monotonic()
    with pytest.raises(AcnImageError, match=r"/slow\.png: downloading and decoding took more than 1 s"):
        pipe(TWEET, image=f"{server}/slow.png", allow_private_urls=True)
    assert time.monotonic() - start < GIVE_UP_SECONDS


# --- acn-predict -------------------------------------------------------------------------------


def test_a_url_names_its_image_like_a_file(server):
    assert image_stem("https://pbs.twimg.com/media/Ab12Cd.jpg?format=jpg&name=large") == "Ab12Cd"
    assert image_stem(Path("images/1015799.jpg")) == "1015799"


def test_predict_tags_url_rows_and_fails_only_the_failing_ones(server, tmp_path):
    pipe = tiny_pipeline()
    pipe.processor.image_processor.download_timeout = SHORT_TIMEOUT  # saved with the model, read by acn-predict
    pipe.save_pretrained(tmp_path / "model")
    striped_image().save(tmp_path / "local.png")
    rows = [
        {"text": TWEET, "image": f"{server}/good.png"},
        {"text": "Obama in Paris", "image": f"{server}/gone.png"},
        {"text": "Merkel meets Obama", "image": "local.png"},
        {"text": "Berlin rocks", "image": f"{server}/slow.png"},
        {"text": "Paris again", "image": f"{server}/page.html"},
        {"text": "Paris", "image": None},
    ]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    argv = [
        "--model",
        str(tmp_path / "model"),
        "--input",
        str(tmp_path / "rows.jsonl"),
        "--output",
        str(tmp_path / "out.jsonl"),
        "--device",
        "cpu",
        "--batch_size",
        "2",
        "--allow_private_urls",
    ]
    start = time.monotonic()
    summary = run(parse_args(argv))
    assert time.monotonic() - start < 60  # the slow row gave up after SHORT_TIMEOUT, it did not wait SLOW_SECONDS
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [("error" in line) for line in lines] == [False, True, False, True, True, False]
    location = f"{tmp_path / 'rows.jsonl'}"
    assert lines[1]["error"] == f"{location}:2: cannot read image {server}/gone.png: {UNAVAILABLE}"
    assert (
        lines[3]["error"]
        == f"{location}:4: cannot read image {server}/slow.png: downloading and decoding took more than 1 s"
    )
    assert lines[4]["error"] == f"{location}:5: cannot read image {server}/page.html: {UNAVAILABLE}"
    assert lines[0]["image"] == f"{server}/good.png"  # the input field as given
    loaded = AcnPipeline.from_pretrained(tmp_path / "model", device="cpu")
    expected = loaded(
        [(TWEET, decoded(GOOD_PNG)), ("Merkel meets Obama", striped_image()), ("Paris", None)], return_tags=True
    )
    for line, result in zip([lines[0], lines[2], lines[5]], expected, strict=True):
        assert line["tags"] == result["tags"] and line["scores"] == pytest.approx(result["scores"], abs=1e-6)
    assert summary["tagged"] == 3 and summary["errors"] == 3


def test_acn_explain_draws_a_url_image(server, tmp_path):
    from acn_mner import explain

    folder = tmp_path / "model"
    tiny_pipeline().save_pretrained(folder)
    explain.main(
        [
            "--model",
            str(folder),
            "--text",
            TWEET,
            "--image",
            f"{server}/good.png",
            "--output",
            str(tmp_path / "x.png"),
            "--device",
            "cpu",
            "--allow_private_urls",
        ]
    )
    assert Image.open(tmp_path / "x.png").format == "PNG"
