"""Image files that are not what they claim: a folder, a huge sparse file, and every mutation of valid images of
several formats. The image reader turns each into that image's `AcnImageError` (the row's error in acn-predict and
the exporter), checks the size before reading, and closes what it opens. Each test is a row of docs/reliability.md."""

import io
import json
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from acn_mner import predict
from acn_mner.corpus import read_image
from modeling_acn.image_processing_acn import AcnImageError, AcnImageProcessor, load_image_file, upright_rgb

from .pipeline_fixtures import striped_image, tiny_pipeline


def encoded(image_format: str, **save) -> bytes:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    if image_format == "JPEG":  # with an orientation tag, so that EXIF parsing runs on the mutations
        exif = Image.Exif()
        exif[0x0112] = 6
        save["exif"] = exif
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **save)
    return buffer.getvalue()


FORMATS = {name: encoded(name) for name in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")}


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


@pytest.mark.bad_input(
    "an image file mutated at random (bytes flipped, cut, inserted) in PNG, JPEG, GIF, BMP, TIFF and WebP",
    "only `AcnImageError` escapes the reader (never IndexError, TypeError, struct.error, ...); no file stays open",
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    image_format=st.sampled_from(sorted(FORMATS)),
    edits=st.lists(
        st.tuples(st.sampled_from(["flip", "cut", "insert"]), st.integers(0, 10**6), st.binary(min_size=1, max_size=8)),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_images_raise_only_the_image_error(tmp_path, image_format, edits):
    data = bytearray(FORMATS[image_format])
    for kind, place, payload in edits:
        place %= max(len(data), 1)
        if kind == "flip":
            data[place : place + len(payload)] = payload
        elif kind == "cut":
            del data[place:]
        else:
            data[place:place] = payload
    path = tmp_path / f"mutated.{image_format.lower()}"
    path.write_bytes(bytes(data))
    before = open_descriptors()
    try:
        image, _ = load_image_file(path, timeout=10)
        upright_rgb(image)
    except AcnImageError:
        pass
    assert open_descriptors() == before


@pytest.mark.bad_input(
    "an image path that is a folder",
    "that image's error, `not a regular file`, in the reader, the pipeline and acn-predict; no descriptor leaks",
)
def test_a_folder_as_an_image_is_that_images_error(tmp_path):
    folder = tmp_path / "photo.jpg"
    folder.mkdir()
    before = open_descriptors()
    for _ in range(20):
        with pytest.raises(AcnImageError, match=r"photo\.jpg: not a regular file"):
            load_image_file(folder)
    assert open_descriptors() == before
    with pytest.raises(AcnImageError, match=r"not a regular file"):
        AcnImageProcessor()(images=[str(folder)])
    assert read_image(tmp_path, "photo").problem.value == "not a regular file"


@pytest.mark.bad_input(
    "a 2 GB sparse file named like an image",
    "refused as `too large` from its size, before a byte is read (`max_image_bytes`, 64 MiB)",
)
def test_a_huge_file_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as file:
        file.truncate(2 * 2**30)  # sparse: no disk used, but reading it would cost 2 GB of memory
    with pytest.raises(AcnImageError, match=r"huge\.jpg: 2147483648 bytes exceed max_image_bytes=67108864") as raised:
        load_image_file(path)
    assert raised.value.reason == "too large"


@pytest.mark.parametrize("error", [struct.error("unpack requires a buffer of 4 bytes"), TypeError("bad tag type")])
def test_a_corrupt_exif_block_leaves_the_picture_as_stored(monkeypatch, error):
    image = striped_image()

    def corrupt_exif():
        raise error

    monkeypatch.setattr(image, "getexif", corrupt_exif)
    assert upright_rgb(image).size == image.size


@pytest.mark.bad_input(
    "an acn-predict row whose image is a folder, a corrupt file, or a file of another format",
    "that row's `error`; the other rows are tagged",
)
def test_predict_turns_every_image_failure_into_a_row_error(tmp_path):
    folder = tmp_path / "model"
    tiny_pipeline().save_pretrained(folder)
    (tmp_path / "folder.jpg").mkdir()
    (tmp_path / "cut.png").write_bytes(FORMATS["PNG"][:40])
    striped_image().save(tmp_path / "good.png")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(
            json.dumps({"text": "Obama visits Paris", "image": name}) + "\n"
            for name in ("folder.jpg", "cut.png", "good.png")
        )
    )
    predict.main(
        ["--model", str(folder), "--input", str(rows), "--output", str(tmp_path / "out.jsonl"), "--device", "cpu"]
    )
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert "not a regular file" in lines[0]["error"] and "cut.png" in lines[1]["error"] and "error" not in lines[2]
