"""Generated Twitter-style corpora and images for the loader tests; no real corpus data is committed."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
BOMB_SIDE = 100_000  # a PNG header claiming 100000x100000 pixels: 10 gigapixels, nothing behind it

# Twitter-2015 ids are numeric; Twitter-2017 ids look like 16_05_01_360 or O_2144, sometimes with ".jpg"
FIXTURE_TWEETS = {
    "train": [
        ("1015799", [("George", "B-PER"), ("Zimmerman", "I-PER"), ("got", "O"), ("shot", "O")]),
        ("16_05_01_360", [("Swan", "B-LOC"), ("upping", "O"), ("on", "O"), ("Thames", "B-LOC")]),
        ("O_2144.jpg", [("RT", "O"), ("Apple", "B-ORG"), ("Watch", "I-OTHER")]),
        ("990", [("the", "O"), ("Super", "I-OTHER"), ("Bowl", "I-OTHER"), ("\u00a0", "O")]),
    ],
    "validation": [
        ("17_06_1", [("NYC", "B-LOC"), ("rocks", "O")]),
    ],
    "test": [
        ("555", [("Obama", "I-PER"), ("in", "O"), ("Paris", "B-LOC")]),
        ("../../etc/passwd", [("nothing", "O")]),
        ("O_77", [("Bulls", "B-ORG"), ("win", "O")]),
    ],
}
SPLIT_FILE_NAMES = {"train": "train.txt", "validation": "valid.txt", "test": "test.txt"}


def corpus_text(tweets: list[tuple[str, list[tuple[str, str]]]]) -> str:
    blocks = [
        "\n".join([f"IMGID:{image_id}"] + [f"{token}\t{tag}" for token, tag in pairs]) for image_id, pairs in tweets
    ]
    return "\n\n".join(blocks) + "\n"


def write_corpus(data_dir: Path, tweets_by_split: dict = FIXTURE_TWEETS) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    for split, tweets in tweets_by_split.items():
        (data_dir / SPLIT_FILE_NAMES[split]).write_text(corpus_text(tweets), encoding="utf-8")
    return data_dir


def encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def noise_jpeg(size: tuple[int, int] = (64, 64)) -> bytes:
    """A JPEG large enough that cutting it in half leaves the header intact."""
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "JPEG")


def rgba_half_transparent() -> bytes:
    """Left half fully transparent red (a colour that must not show), right half opaque blue."""
    image = Image.new("RGBA", (16, 8), RED + (0,))
    image.paste(BLUE + (255,), (8, 0, 16, 8))
    return encode(image, "PNG")


def exif_rotated_jpeg() -> bytes:
    """Stored 32x16; EXIF orientation 6 (rotate 90 degrees clockwise) makes it 16x32 upright."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    return encode(Image.new("RGB", (32, 16), RED), "JPEG", exif=exif.tobytes())


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), GREEN)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def bomb_png() -> bytes:
    """A valid 1x1 PNG whose IHDR is patched to claim BOMB_SIDE x BOMB_SIDE pixels (CRC fixed up)."""
    data = bytearray(encode(Image.new("RGB", (1, 1)), "PNG"))
    ihdr_start = 8 + 4  # signature, then the chunk length
    body = b"IHDR" + struct.pack(">II", BOMB_SIDE, BOMB_SIDE) + bytes(data[ihdr_start + 12 : ihdr_start + 17])
    data[ihdr_start : ihdr_start + 17] = body
    data[ihdr_start + 17 : ihdr_start + 21] = struct.pack(">I", zlib.crc32(body))
    return bytes(data)


IMAGE_BYTES = {
    "rgb_jpeg": lambda: encode(Image.new("RGB", (32, 24), RED), "JPEG"),
    "empty": lambda: b"",
    "truncated_jpeg": lambda: noise_jpeg()[: len(noise_jpeg()) // 2],
    "garbage": lambda: b"this is not an image\n" * 8,
    "png_alpha": rgba_half_transparent,
    "cmyk_jpeg": lambda: encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"),
    "grayscale_jpeg": lambda: encode(Image.new("L", (8, 8), 128), "JPEG"),
    "palette_png": lambda: encode(Image.new("RGB", (8, 8), GREEN).convert("P"), "PNG"),
    "animated_gif": animated_gif,
    "exif_rotated": exif_rotated_jpeg,
    "bomb_png": bomb_png,
}

# fixture tweets -> the kind of picture behind their IMGID; "990" has no file at all
FIXTURE_IMAGES = {
    "1015799": "rgb_jpeg",
    "16_05_01_360": "png_alpha",
    "O_2144": "exif_rotated",
    "17_06_1": "cmyk_jpeg",
    "555": "truncated_jpeg",
    "O_77": "animated_gif",
}


def write_image(image_dir: Path, image_id: str, kind: str) -> Path:
    """Write a picture of ``kind`` as ``<image_id>.jpg``, whatever its real format (as Twitter dumps do)."""
    image_dir.mkdir(parents=True, exist_ok=True)
    path = image_dir / f"{image_id}.jpg"
    path.write_bytes(IMAGE_BYTES[kind]())
    return path


def write_images(image_dir: Path, kinds_by_id: dict[str, str] = FIXTURE_IMAGES) -> Path:
    for image_id, kind in kinds_by_id.items():
        write_image(image_dir, image_id, kind)
    return image_dir
