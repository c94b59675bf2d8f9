"""The Space app (space/app.py): its output builders on a tiny model, its examples against the demo corpus's files,
and the running app driven in headless Chromium."""

import configparser
import functools
import importlib.util
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

from acn_mner import demo_corpus
from acn_mner.predict import open_image
from modeling_acn.url_policy_acn import UNAVAILABLE
from tests.corpus_fixtures import IMAGE_BYTES
from tests.http_fixtures import Route, image_server, png
from tests.pipeline_fixtures import striped_image, tiny_pipeline
from tests.training_fixtures import free_port

gr = pytest.importorskip(
    "gradio", reason="gradio is not installed: the app extra, pip install -e '.[app]' (make setup)"
)

ROOT = Path(__file__).resolve().parents[1]
APP_FILE = ROOT / "space" / "app.py"
# what the tiny model is taught, and so must find on the page
TAUGHT = [
    ("Obama visits Paris", ["B-PER", "O", "B-LOC"]),
    ("Merkel meets @user in Berlin", ["B-PER", "O", "O", "O", "B-LOC"]),
]
PAGE_TWEET, PAGE_ENTITIES = TAUGHT[0][0], [("Obama", "PER"), ("Paris", "LOC")]
TEACHING_STEPS = 80
SERVER_START_SECONDS = 180  # gradio, torch and the model load on two shared cores
PAGE_SECONDS = 120
# what the page says of a URL on a private address, and of one whose server answers 404: the same
UNAVAILABLE_URL = r"cannot read image http://127\.0\.0\.1:\d+/\w+\.png: " + re.escape(UNAVAILABLE)


def load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as an import does: gradio reads its components' source through the module
    spec.loader.exec_module(module)
    return module


app = load_module("acn_space_app", APP_FILE)


def demo_photo() -> Image.Image:
    return demo_corpus.draw_image(np.random.default_rng(0), "LOC")


def taught_pipeline(photo: Image.Image):
    """The tiny pipeline trained on TAUGHT with `photo` until it tags those tweets with that photo as taught."""
    pipe = tiny_pipeline()
    model = pipe.model
    inputs = pipe.processor([text for text, _ in TAUGHT], images=[photo] * len(TAUGHT))
    with torch.no_grad():
        features = model.get_image_features(inputs.pop("pixel_values"))  # (tweets, 49, 512), once
    labels = torch.full(inputs["input_ids"].shape, -100)  # (tweets, seq_len)
    for row, (_, tags) in enumerate(TAUGHT):
        labels[row, : len(tags)] = torch.tensor([model.config.label2id[tag] for tag in tags])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(TEACHING_STEPS):
        loss = model(**inputs, image_features=features, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return pipe


# --- the outputs, without a server -----------------------------------------------------------------


@pytest.fixture(scope="module")
def taught():
    photo = demo_photo()
    return taught_pipeline(photo), photo


def test_taught_model_finds_the_taught_entities(taught):
    pipe, photo = taught
    for text, tags in TAUGHT:
        assert pipe(text, image=photo, return_tags=True)["tags"] == tags


def test_tag_tweet_outputs_match_the_pipeline(taught):
    pipe, photo = taught
    highlighted, colors, entities, words, picture = app.tag_tweet(pipe, PAGE_TWEET, photo)
    result = pipe(PAGE_TWEET, image=photo, output_attentions=True)
    assert highlighted == {
        "text": PAGE_TWEET,
        "entities": [{"entity": "PER", "start": 0, "end": 5}, {"entity": "LOC", "start": 13, "end": 18}],
    }
    assert set(colors) == {"PER", "LOC"}
    assert entities == [[e["word"], e["entity_group"], round(e["score"], 3)] for e in result["entities"]]
    assert [row[:2] for row in entities] == [list(pair) for pair in PAGE_ENTITIES]
    assert [row[:3] for row in words] == [
        [w, t, round(s, 3)] for w, t, s in zip(result["words"], result["tags"], result["scores"], strict=True)
    ]
    assert [row[3] for row in words] == pytest.approx(result["fusion_gates"].tolist(), abs=5e-4)
    assert [row[4] for row in words] == pytest.approx(result["filtration_gates"].tolist(), abs=5e-4)
    assert picture.size[0] > 500 and picture.size[1] > 300


def test_highlighted_spans_and_colors_follow_the_entities():
    text = "RT Barack Obama in Paris"
    entities = [{"entity_group": "PER", "start": 3, "end": 15}, {"entity_group": "LOC", "start": 19, "end": 24}]
    value = app.highlighted_tweet(text, entities)
    assert [text[span["start"] : span["end"]] for span in value["entities"]] == ["Barack Obama", "Paris"]
    colors = app.type_colors(["O", "B-PER", "I-PER", "O", "B-LOC"])
    assert set(colors) == {"PER", "LOC"} and colors["PER"] != colors["LOC"]
    assert all(re.fullmatch(r"#[0-9a-f]{6}", color) for color in colors.values())


def test_concat_fusion_shows_no_fusion_gate():
    pipe = tiny_pipeline(fusion="concat")
    *_, words, _ = app.tag_tweet(pipe, "Obama visits Paris", striped_image())
    assert [row[3] for row in words] == [None, None, None]


def test_tweet_without_photo_is_tagged_from_its_text():
    pipe = tiny_pipeline()
    *_, words, picture = app.tag_tweet(pipe, "Obama visits Paris", None)
    assert [row[4] for row in words] == [0.0, 0.0, 0.0]  # nothing of the image reaches the tagger
    assert picture.size[0] > 500


@pytest.fixture
def local_server_as_public(monkeypatch):
    """The app's image reader with the URL policy lifted, so that the local test server stands in for a public one
    (the app itself keeps the policy: test_a_photo_url_on_a_private_address_is_refused)."""
    monkeypatch.setattr(app, "open_image", functools.partial(open_image, allow_private_urls=True))


def test_a_photo_url_on_a_private_address_is_refused(taught):
    pipe, photo = taught
    hits = []
    with (
        image_server({"/photo.png": Route(png(photo))}, hits) as server,
        pytest.raises(gr.Error, match=UNAVAILABLE_URL),
    ):
        app.tag_tweet(pipe, PAGE_TWEET, None, f"{server}/photo.png")
    assert hits == []  # never fetched


def test_a_photo_url_is_tagged_like_the_uploaded_photo(taught, local_server_as_public):
    pipe, photo = taught
    with image_server({"/photo.png": Route(png(photo))}) as server:
        by_url = app.tag_tweet(pipe, PAGE_TWEET, None, f" {server}/photo.png ")
    uploaded = app.tag_tweet(pipe, PAGE_TWEET, photo, "")
    assert by_url[:4] == uploaded[:4]  # highlighted tweet, colours, entity rows, word rows
    assert np.array_equal(np.asarray(by_url[4]), np.asarray(uploaded[4]))  # the explanation shows the same photo


@pytest.mark.parametrize(
    "url, message",
    [
        ("{server}/gone.png", UNAVAILABLE_URL),
        (
            "{server}/slow.png",
            r"cannot read image http://127\.0\.0\.1:\d+/slow\.png: downloading and decoding took more than 1 s",
        ),
        (
            "/etc/hostname",
            r"The photo's URL must start with http:// or https://, got '/etc/hostname'",
        ),  # never a server file
        ("www.example.com/a.jpg", r"must start with http:// or https://, got 'www\.example\.com/a\.jpg'"),
    ],
    ids=["404", "slow", "local-path", "no-scheme"],
)
def test_a_photo_url_that_cannot_be_read_is_named_on_the_page(url, message, local_server_as_public):
    pipe = tiny_pipeline()
    pipe.processor.image_processor.download_timeout = 1.0
    routes = {"/slow.png": Route(png(striped_image()), delay=6.0)}
    with image_server(routes) as server, pytest.raises(gr.Error, match=message):
        app.tag_tweet(pipe, "Obama visits Paris", None, url.format(server=server))


def test_a_photo_and_a_url_together_are_refused():
    with pytest.raises(gr.Error, match="Give the photo either as a file or as a URL, not both"):
        app.tag_tweet(tiny_pipeline(), "Obama visits Paris", striped_image(), "http://127.0.0.1:9/a.png")


@pytest.mark.parametrize("text", ["", "   \n"])
def test_an_empty_tweet_is_refused(text):
    with pytest.raises(gr.Error, match="Type a tweet first"):
        app.tag_tweet(tiny_pipeline(), text, striped_image())


def test_a_missing_default_model_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"no model at 'outputs/demo/acn': run `make demo` first"):
        app.load_pipeline(app.DEFAULT_MODEL)


def test_a_text_only_model_is_refused(tmp_path):
    tiny_pipeline(use_image=False).save_pretrained(tmp_path / "text_only")
    with pytest.raises(SystemExit, match="needs a model with images; .*text_only' has use_image=False"):
        app.load_pipeline(str(tmp_path / "text_only"), device="cpu")


def test_model_and_remote_code_come_from_arguments_or_space_variables(monkeypatch):
    monkeypatch.delenv(app.MODEL_VARIABLE, raising=False)
    monkeypatch.delenv(app.TRUST_REMOTE_CODE_VARIABLE, raising=False)
    args = app.parse_args([])
    assert (args.model, args.trust_remote_code) == (app.DEFAULT_MODEL, False)
    assert (args.host, args.port) == (None, None)  # gradio then takes a Space's GRADIO_SERVER_NAME/PORT
    monkeypatch.setenv(app.MODEL_VARIABLE, "someone/acn-demo")
    monkeypatch.setenv(app.TRUST_REMOTE_CODE_VARIABLE, "1")
    args = app.parse_args([])
    assert (args.model, args.trust_remote_code) == ("someone/acn-demo", True)
    assert app.parse_args(["--model", "folder"]).model == "folder"


def test_examples_are_the_demo_corpus_test_tweets(tmp_path):
    # each split draws from its own generator, so two-tweet train and validation splits leave the test split as it is
    corpus = demo_corpus.write_demo_corpus(tmp_path / "corpus", seed=app.DEMO_SEED, num_train=2, num_valid=2)
    blocks = (corpus / "test.txt").read_text(encoding="utf-8").strip().split("\n\n")
    examples = app.demo_examples()
    assert len(examples) == app.NUM_EXAMPLES
    for (text, image), block in zip(examples, blocks[: app.NUM_EXAMPLES], strict=True):
        image_id, *lines = block.splitlines()
        assert text == " ".join(line.split("\t")[0] for line in lines)
        with Image.open(corpus / "images" / f"{image_id.removeprefix('IMGID:')}.jpg") as expected:
            assert np.array_equal(np.asarray(image), np.asarray(expected))


def test_the_space_bundle_runs_the_app_on_its_own_copy_of_the_package(tmp_path):
    bundle = load_module("acn_space_bundle", ROOT / "space" / "bundle.py")
    bundle.main(["--output_dir", str(tmp_path / "space")])
    space = tmp_path / "space"
    tracked = subprocess.run(
        ["git", "ls-files", *bundle.PACKAGES], cwd=ROOT, capture_output=True, text=True, check=True
    )
    expected = {"app.py", "README.md", "requirements.txt", *tracked.stdout.split()}
    assert {str(path.relative_to(space)) for path in space.rglob("*") if path.is_file()} == expected
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    requirements = (space / "requirements.txt").read_text().splitlines()
    assert [line for line in requirements if not line.startswith("#")] == config["options"]["install_requires"].split()
    card = (space / "README.md").read_text(encoding="utf-8")
    assert re.search(r"^---\n(.*\n)*sdk: gradio\n(.*\n)*app_file: app\.py\n(.*\n)*---\n", card)
    modules = ["app", *bundle.PACKAGES]
    probe = f"import importlib.util\nfor name in {modules!r}: print(importlib.util.find_spec(name).origin)"
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    shown = subprocess.run(
        [sys.executable, "-c", probe], cwd=space, env=environment, capture_output=True, text=True, check=True
    )
    assert shown.stdout.split() == [
        str(space / "app.py"),
        *(str(space / name / "__init__.py") for name in bundle.PACKAGES),
    ]


# --- the running app in a real browser --------------------------------------------------------------


@pytest.fixture
def browser_paths():
    """Paths of chromium and chromedriver, or a skip that names what is missing."""
    pytest.importorskip(
        "selenium", reason="selenium is not installed: the dev extra, pip install -e '.[dev]' (make setup)"
    )
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if missing:
        pytest.skip(
            f"no headless browser: {' and '.join(missing)} not on PATH "
            "(Debian: apt-get install chromium chromium-driver; .ci/run installs them)"
        )
    return shutil.which("chromium"), shutil.which("chromedriver")


def wait_until_serving(server: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the app exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    pytest.fail(f"the app did not serve {url} within {SERVER_START_SECONDS} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def served_app(taught, tmp_path):
    """The app in its own process on a free port, serving the taught model; the photo it was taught with."""
    pipe, photo = taught
    pipe.save_pretrained(tmp_path / "model")
    photo.save(tmp_path / "photo.png")
    port = free_port()
    log = tmp_path / "app.log"
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "GRADIO_TEMP_DIR": str(tmp_path / "gradio"),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    command = [
        sys.executable,
        str(APP_FILE),
        "--model",
        str(tmp_path / "model"),
        "--port",
        str(port),
        "--device",
        "cpu",
    ]
    with open(log, "wb") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=environment, cwd=tmp_path)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_serving(server, url, log)
        yield url, tmp_path / "photo.png", log
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def headless_chromium(chromium: str, chromedriver: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,2200"):
        options.add_argument(argument)  # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
    return webdriver.Chrome(service=Service(chromedriver), options=options)


def submit(browser, url: str, text: str, photo: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, PAGE_SECONDS).until(lambda page: page.find_elements(By.CSS_SELECTOR, "#tweet textarea"))
    browser.find_element(By.CSS_SELECTOR, "#tweet textarea").send_keys(text)
    browser.find_element(By.CSS_SELECTOR, "#photo input[type=file]").send_keys(str(photo))
    WebDriverWait(browser, PAGE_SECONDS).until(lambda page: page.find_elements(By.CSS_SELECTOR, "#photo img"))
    browser.find_element(By.ID, "tag").click()
    WebDriverWait(browser, PAGE_SECONDS).until(lambda page: page.find_elements(By.CSS_SELECTOR, "#explanation img"))
    WebDriverWait(browser, PAGE_SECONDS).until(lambda page: any(row[0] for row in page_entity_rows(page)))


def page_entity_rows(browser) -> list[list[str]]:
    """The cells of the entity table as shown (gradio's grid; its <table> is a hidden copy for sizing)."""
    from selenium.webdriver.common.by import By

    rows = browser.find_elements(By.CSS_SELECTOR, "#entities .virtual-row[role=row]")
    return [[cell.text for cell in row.find_elements(By.CSS_SELECTOR, "[role=gridcell]")] for row in rows]


def page_highlighted_types(browser) -> dict[str, str]:
    """Each highlighted word, with the legend label whose colour it carries."""
    from selenium.webdriver.common.by import By

    legend = {
        item.value_of_css_property("background-color"): item.text
        for item in browser.find_elements(By.CSS_SELECTOR, "#highlighted .legend-item")
    }
    return {
        token.text.strip(): legend.get(token.value_of_css_property("background-color"))
        for token in browser.find_elements(By.CSS_SELECTOR, "#highlighted .token.highlighted")
    }


@pytest.mark.slow
def test_the_app_in_headless_chromium_finds_the_entities(browser_paths, served_app, tmp_path):
    from selenium.common.exceptions import TimeoutException

    chromium, chromedriver = browser_paths
    url, photo_path, log = served_app
    with Image.open(photo_path) as photo:
        expected = reference_entities(tmp_path / "model", photo)
    assert [(entity["word"], entity["entity_group"]) for entity in expected] == PAGE_ENTITIES
    browser = headless_chromium(chromium, chromedriver)
    screenshot = tmp_path / "space_app.png"
    try:
        submit(browser, url, PAGE_TWEET, photo_path)
        rows = page_entity_rows(browser)
        highlighted = page_highlighted_types(browser)
    except TimeoutException:
        pytest.fail(f"the page showed no entities within {PAGE_SECONDS} s; screenshot {screenshot}; app log {log}")
    finally:
        browser.save_screenshot(str(screenshot))
        browser.quit()
        print(f"screenshot of the app: {screenshot}")
    assert rows == [
        [entity["word"], entity["entity_group"], f"{round(entity['score'], 3):g}"] for entity in expected
    ], f"page rows {rows}; screenshot {screenshot}; app log {log}"
    assert highlighted == dict(PAGE_ENTITIES), f"screenshot {screenshot}"


def reference_entities(folder: Path, photo: Image.Image) -> list[dict]:
    """What the saved model finds in the page's tweet, run here in the test's process."""
    from modeling_acn import AcnPipeline

    return AcnPipeline.from_pretrained(folder, device="cpu")(PAGE_TWEET, image=photo.convert("RGB"))


@pytest.mark.bad_input(
    "a Space app upload that is no picture (a text file named photo.jpg)",
    "the page shows `cannot read image photo.jpg: cannot decode (not an image format PIL can read)` instead of an "
    "empty error",
)
def test_an_upload_that_is_no_picture_is_refused_with_its_reason(tmp_path):
    import gradio as gr
    from gradio.data_classes import ImageData

    upload = tmp_path / "photo.jpg"
    upload.write_text("these are not pixels")
    with gr.Blocks():
        photo = app.photo_input()
    with pytest.raises(
        gr.Error, match=r"cannot read image photo\.jpg: cannot decode \(not an image format PIL can read\)"
    ):
        photo.preprocess(ImageData(path=str(upload), orig_name="photo.jpg"))
    assert not (ROOT / "space" / "app.pyi").exists()  # nothing written beside the app


def test_a_stop_while_launch_is_still_starting_closes_the_server(monkeypatch):
    events = []

    class Launching:
        def launch(self, **kwargs):
            events.append("launch")
            app.stop_serving(None, None)  # SIGTERM before launch reaches its wait, which would close the server

        def close(self):
            events.append("close")

    monkeypatch.setattr(app, "load_pipeline", lambda *args: None)
    monkeypatch.setattr(app, "build_app", lambda *args: Launching())
    monkeypatch.setattr(app.signal, "signal", lambda *args: None)
    app.main(["--model", "unused", "--device", "cpu"])
    assert events == ["launch", "close"]


@pytest.mark.slow
@pytest.mark.bad_input("Space app uploads, once the app stops", "deleted with the app (and an hour after they arrive)")
def test_uploads_are_deleted_when_the_app_stops(taught, tmp_path):
    pipe, photo = taught
    pipe.save_pretrained(tmp_path / "model")
    port, log, uploads = free_port(), tmp_path / "app.log", tmp_path / "gradio"
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "GRADIO_TEMP_DIR": str(uploads),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    command = [
        sys.executable,
        str(APP_FILE),
        "--model",
        str(tmp_path / "model"),
        "--port",
        str(port),
        "--device",
        "cpu",
    ]
    with open(log, "wb") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=environment, cwd=tmp_path)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_serving(server, url, log)
        body = (
            b'--b\r\nContent-Disposition: form-data; name="files"; filename="photo.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + png(photo) + b"\r\n--b--\r\n"
        )
        request = urllib.request.Request(
            f"{url}gradio_api/upload", data=body, headers={"Content-Type": "multipart/form-data; boundary=b"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            (stored,) = [Path(name) for name in __import__("json").loads(response.read())]
        assert stored.is_file() and uploads in stored.parents
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert not stored.exists(), log.read_text()[-2000:]


# --- uploads read by the project's image reader ------------------------------------------------------


def sixteen_bit_png() -> bytes:
    """A 16-bit grey PNG: left half 25700 (100 in 8 bits), right half 51400 (200)."""
    values = np.full((32, 48), 25700, dtype=np.uint16)  # (height, width)
    values[:, 24:] = 51400
    return png(Image.fromarray(values))


def grey_png_of_size(width: int, height: int) -> bytes:
    """A valid 8-bit grey PNG of `width` x `height` black pixels, compressed row by row to a few kilobytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    compressor = zlib.compressobj(9)
    row = bytes(1 + width)  # filter type 0, then one byte per pixel
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def uploaded(path: Path, name: str):
    """What the app's photo input hands the page's function for an upload of the file at `path` named `name`."""
    from gradio.data_classes import ImageData

    with gr.Blocks():
        photo = app.photo_input()
    return photo.preprocess(ImageData(path=str(path), orig_name=name))


@pytest.mark.bad_input(
    "a Space app upload of a 16-bit PNG or of a transparent PNG",
    "read by acn-predict's reader: the same pixels (16-bit values scaled, transparency on white) and tags, "
    "not a white or a black photo",
)
@pytest.mark.parametrize(
    "data, left, right",
    [(sixteen_bit_png, (100, 100, 100), (200, 200, 200)), (IMAGE_BYTES["png_alpha"], (255, 255, 255), (0, 0, 255))],
    ids=["16-bit", "transparent"],
)
def test_an_upload_is_read_as_acn_predict_reads_it(taught, tmp_path, data, left, right):
    pipe, _ = taught
    path = tmp_path / "photo.png"
    path.write_bytes(data())
    photo, expected = uploaded(path, "photo.png"), open_image(path)  # open_image: acn-predict's reader
    assert np.array_equal(np.asarray(photo), np.asarray(expected))
    pixels = np.asarray(photo)  # (height, width, 3)
    assert tuple(pixels[0, 0]) == left and tuple(pixels[0, -1]) == right
    *_, words, _ = app.tag_tweet(pipe, PAGE_TWEET, photo)
    assert [row[1] for row in words] == pipe(PAGE_TWEET, image=expected, return_tags=True)["tags"]


@pytest.mark.bad_input(
    "a Space app upload of a small PNG of more pixels than the reader's limit (8192x4097)",
    "refused by the reader's pixel check before a pixel is decoded: `cannot read image huge.png: 8192x4097 pixels "
    "exceed max_pixels=...`",
)
def test_an_upload_of_too_many_pixels_is_refused_before_decoding(tmp_path, monkeypatch):
    from PIL import ImageFile

    from modeling_acn.image_processing_acn import MAX_IMAGE_PIXELS

    width, height = 8192, MAX_IMAGE_PIXELS // 8192 + 1
    path = tmp_path / "huge.png"
    path.write_bytes(grey_png_of_size(width, height))
    assert path.stat().st_size < 100_000
    decoded = []
    load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda image: decoded.append(image.size) or load(image))
    message = rf"cannot read image huge\.png: {width}x{height} pixels exceed max_pixels={MAX_IMAGE_PIXELS}"
    with pytest.raises(gr.Error, match=message):
        uploaded(path, "huge.png")
    assert decoded == []


@pytest.mark.bad_input(
    "a Space app tweet longer than the page's limit (10,000 characters)",
    "refused at once, before the model: `The tweet has 10000 characters; this page tags tweets of up to 1000.`",
)
def test_a_tweet_over_the_length_limit_is_refused_before_the_model():
    model = mock.Mock(side_effect=AssertionError("the model ran"))
    limit = app.MAX_TWEET_CHARACTERS
    with pytest.raises(gr.Error, match=rf"The tweet has 10000 characters; this page tags tweets of up to {limit}\."):
        app.tag_tweet(model, "word " * 2000, None)


def test_a_tweet_at_the_length_limit_is_tagged_word_by_word():
    text = ("Obama " * app.MAX_TWEET_CHARACTERS)[: app.MAX_TWEET_CHARACTERS]
    *_, words, picture = app.tag_tweet(tiny_pipeline(), text, striped_image())
    assert len(words) == len(text.split())  # every word has its row; the picture draws the first ones
    assert picture.size[0] > 500


# --- the app served in this process: its upload limit and its concurrency ---------------------------

SLOW_PHOTO_SECONDS = 10.0  # how long the slow request's photo takes to arrive


def post_upload(url: str, name: str, data: bytes) -> list[str]:
    """POST one file to the app's upload route as the page does; the paths it stored."""
    head = f'--b\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\nContent-Type: image/png\r\n\r\n'
    body = head.encode() + data + b"\r\n--b--\r\n"
    request = urllib.request.Request(
        f"{url}gradio_api/upload", data=body, headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def stored_files(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()}


@pytest.fixture
def app_in_process(tmp_path, monkeypatch):
    """The app with a tiny model, launched by its own `serve` in this process on a free port; its URL and its
    upload folder."""
    uploads = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    blocks = app.build_app(tiny_pipeline(), [[PAGE_TWEET, striped_image()]], "tiny")
    port = free_port()
    app.serve(blocks, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", uploads
    finally:
        blocks.close()


@pytest.mark.slow
@pytest.mark.bad_input(
    "a Space app upload larger than the upload limit (20 MiB + 1 byte)",
    "refused by gradio with HTTP 413 while it arrives (`max_file_size`); nothing of it is stored",
)
def test_an_upload_over_the_size_limit_is_refused(app_in_process):
    url, uploads = app_in_process
    (small,) = post_upload(url, "photo.png", png(striped_image()))
    assert Path(small).is_file()
    before = stored_files(uploads)
    with pytest.raises(urllib.error.HTTPError) as refused:
        post_upload(url, "big.png", png(striped_image()) + bytes(app.MAX_UPLOAD_BYTES))
    assert refused.value.code == 413
    assert stored_files(uploads) == before


@pytest.mark.slow
@pytest.mark.bad_input(
    "a Space app request that takes long (a photo URL that answers slowly)",
    "the other visitors' requests are served meanwhile (several at once; the model one call at a time)",
)
def test_a_slow_request_does_not_hold_up_a_text_only_one(app_in_process, monkeypatch):
    from gradio_client import Client

    def slow_photo(pipe, url):
        time.sleep(SLOW_PHOTO_SECONDS)
        return striped_image()

    monkeypatch.setattr(app, "photo_from_url", slow_photo)
    url, _ = app_in_process
    client = Client(url, verbose=False)
    client.predict(PAGE_TWEET, None, "", api_name="/show")  # the first request draws matplotlib's fonts
    start = time.monotonic()
    slow = client.submit(PAGE_TWEET, None, "https://photos.example/slow.png", api_name="/show")
    time.sleep(0.5)  # the slow request is in first
    fast = client.submit(PAGE_TWEET, None, "", api_name="/show")
    fast.result(timeout=60)
    fast_seconds = time.monotonic() - start
    slow.result(timeout=60)
    slow_seconds = time.monotonic() - start
    assert slow_seconds >= SLOW_PHOTO_SECONDS
    assert fast_seconds < SLOW_PHOTO_SECONDS / 2, f"the text-only request took {fast_seconds:.1f} s"
