"""Image processor for ACN: any tweet image to a normalised 224x224 RGB tensor for the VGG-16 trunk.

Every way an image enters the project (the corpus loader, `acn-predict`, `acn-explain`, the pipeline and this
processor) goes through `load_image_file` (or `load_image_url` for an http(s) URL) / `check_image` / `to_rgb`
below: one decoder, one pixel limit, one timeout and one set of modes, so that a picture gives the same pixels
whichever path reads it.
"""

import io
import os
import stat
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeGuard, TypeVar

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from transformers import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    PILImageResampling,
)

from .url_policy_acn import UNAVAILABLE, FetchHandle, UrlFetchError, fetch_url

WHITE = (255, 255, 255, 255)  # transparent pixels are shown on white, as a browser shows a tweet's image
# PIL clips these to 255 instead of scaling them; "I" is how older Pillow versions load 16-bit PNGs.
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
SUPPORTED_MODES = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV") + ALPHA_MODES + SIXTEEN_BIT_MODES
SIXTEEN_TO_EIGHT_BIT = 257  # 65535 / 255
MAX_IMAGE_PIXELS = 2 * 4096 * 4096  # twice Twitter's largest upload; PIL's own warning starts at 89M
# Each backbone's resize filter and normalisation, those of its training. The resize keeps the whole picture (no
# centre crop, unlike CLIP's own processor): a tweet's figure may sit at the border.
BACKBONE_PREPROCESSING = {
    "vgg16": {
        "resample": PILImageResampling.BILINEAR,
        "image_mean": IMAGENET_DEFAULT_MEAN,
        "image_std": IMAGENET_DEFAULT_STD,
    },
    "resnet152": {
        "resample": PILImageResampling.BILINEAR,
        "image_mean": IMAGENET_DEFAULT_MEAN,
        "image_std": IMAGENET_DEFAULT_STD,
    },
    "clip-vit-b32": {
        "resample": PILImageResampling.BICUBIC,
        "image_mean": OPENAI_CLIP_MEAN,
        "image_std": OPENAI_CLIP_STD,
    },
}
IMAGE_TIMEOUT_SECONDS = 30.0  # reading and decoding one image; a hung mount or a pathological file fails that image
URL_SCHEMES = ("http://", "https://")  # what transformers' load_image and the Hub's widgets pass
DOWNLOAD_TIMEOUT_SECONDS = 20.0  # connecting, downloading and decoding one image URL, all together
MAX_IMAGE_BYTES = (
    64 * 2**20
)  # an image file larger than this is refused before it is read (a sparse 2 GB file cost 2 GB)
MAX_DOWNLOAD_BYTES = 20 * 2**20  # 20 MiB: four times Twitter's largest photo upload; max_pixels still applies
# what `AcnImageProcessor.preprocess` takes per image: None is a missing image
_ImageInput = Image.Image | np.ndarray | str | os.PathLike | None
_ImageInputs = _ImageInput | list[_ImageInput] | tuple[_ImageInput, ...]  # one image, or a batch as a list or tuple
_T = TypeVar("_T")


class AcnImageError(ValueError):
    """An image that cannot be used. `reason` is one of `IMAGE_ERROR_REASONS`; the message names the file or URL."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# why an image is refused; the corpus loader stores these in its `image_problem` column
IMAGE_ERROR_REASONS = (
    "missing file",
    "not a regular file",
    "empty file",
    "corrupt",
    "too large",
    "unsupported mode",
    "timed out",
    "download failed",  # an image URL refused by the URL policy or that gave no image (one message for all)
)


def load_image_file(
    path: str | os.PathLike,
    max_pixels: int = MAX_IMAGE_PIXELS,
    timeout: float = IMAGE_TIMEOUT_SECONDS,
    max_bytes: int = MAX_IMAGE_BYTES,
) -> tuple[Image.Image, bytes]:
    """Read and fully decode an image file: the decoded (not yet converted) image and the file's bytes.

    Only regular files of at most `max_bytes` bytes are read (a FIFO or a device would block or never end; the size
    is checked before reading); reading and decoding together may take at most `timeout` seconds. Every failure,
    whatever a decoder raises, is an `AcnImageError` naming the file and the reason; the file is always closed.
    """
    name = os.fspath(path)
    return _within_timeout(lambda: _read_and_decode(name, max_pixels, max_bytes), timeout, name)


def is_image_url(image: object) -> TypeGuard[str]:
    """Whether `image` is a string naming an http:// or https:// URL (any other string is a file path)."""
    return isinstance(image, str) and image[:8].lower().startswith(URL_SCHEMES)


def load_image_url(
    url: str,
    max_pixels: int = MAX_IMAGE_PIXELS,
    timeout: float = DOWNLOAD_TIMEOUT_SECONDS,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
    allow_private_urls: bool = False,
) -> tuple[Image.Image, bytes]:
    """Download and fully decode an http(s) image: the decoded (not yet converted) image and the body's bytes.

    The download follows the project's URL policy (`url_policy_acn`): public addresses only, unless
    `allow_private_urls=True` (for your own network; never for URLs a stranger sends). Connecting, downloading and
    decoding together may take at most `timeout` seconds, after which the connection is closed, and the body at
    most `max_bytes` bytes (read in chunks, stopped past the limit); the decoding is `load_image_file`'s, with the
    same pixel limit and modes. Raises `AcnImageError` naming the URL and the reason: "timed out", "too large",
    "empty file", or "download failed" with one message for every other refusal or failure (a private address, no
    connection, an HTTP error status, a body that is not an image), so that the error does not tell what was there.
    """
    if not is_image_url(url):
        raise ValueError(f"url must start with http:// or https://, got {url!r}")
    if not isinstance(allow_private_urls, bool):
        raise ValueError(f"allow_private_urls must be True or False, got {allow_private_urls!r}")
    timeout, max_bytes = _download_limits(timeout, max_bytes)
    handle = FetchHandle()
    return _within_timeout(
        lambda: _download_and_decode(url, max_pixels, timeout, max_bytes, allow_private_urls, handle),
        timeout,
        url,
        "downloading and decoding",
        on_give_up=handle.close,
    )


def decode_image_bytes(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS, name: str = "image") -> Image.Image:
    """Decode encoded image bytes fully (so truncation shows) after checking the mode and the pixel count."""
    if not data:
        raise AcnImageError("empty file", f"{name}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # check_image is the guard
            image = Image.open(io.BytesIO(data))
        check_image(image, max_pixels, name)
        image.load()
    except Image.DecompressionBombError as error:  # PIL's own hard limit, above ours
        raise AcnImageError("too large", f"{name}: {error}") from None
    except UnidentifiedImageError:  # its message names the in-memory buffer by address, which differs run to run
        raise AcnImageError("corrupt", f"{name}: cannot decode (not an image format PIL can read)") from None
    except AcnImageError:
        raise
    except MemoryError:
        raise AcnImageError("too large", f"{name}: decoding needs more memory than there is") from None
    except Exception as error:  # PIL's decoders raise OSError, SyntaxError and ValueError, and some (QOI, DDS, EXIF
        # parsing) IndexError, NotImplementedError, TypeError or struct.error: each is this image's failure
        raise AcnImageError("corrupt", f"{name}: cannot decode ({error or type(error).__name__})") from None
    return image


def check_image(image: Image.Image, max_pixels: int = MAX_IMAGE_PIXELS, name: str = "image") -> None:
    """Refuse images of more than `max_pixels` pixels or of a mode `to_rgb` cannot convert faithfully."""
    width, height = image.size
    if width * height > max_pixels:
        raise AcnImageError("too large", f"{name}: {width}x{height} pixels exceed max_pixels={max_pixels}")
    if image.mode not in SUPPORTED_MODES:
        raise AcnImageError(
            "unsupported mode", f"{name}: image mode {image.mode!r} is not one of {', '.join(SUPPORTED_MODES)}"
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB view of a PIL image of any supported mode: transparency composited on white, 16-bit values scaled."""
    if image.mode == "RGB":
        return image
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64) / SIXTEEN_TO_EIGHT_BIT  # (height, width)
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE), rgba).convert("RGB")
    return image.convert("RGB")


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1: upright); 1 when the EXIF block cannot be parsed."""
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # a corrupt EXIF block (TypeError, struct.error, ...): the picture is taken as stored
        return 1


def upright_rgb(image: Image.Image) -> Image.Image:
    """EXIF orientation applied (phone photos), then `to_rgb`; the first frame of an animation. A corrupt EXIF
    block leaves the picture as stored."""
    if exif_orientation(image) != 1:
        try:
            image = ImageOps.exif_transpose(image)
        except Exception:  # an orientation that parses but cannot be applied: as stored
            pass
    return to_rgb(image)


def _read_and_decode(name: str, max_pixels: int, max_bytes: int) -> tuple[Image.Image, bytes]:
    descriptor: int | None
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; regular files ignore the flag
        descriptor = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise AcnImageError("missing file", f"{name}: no such file") from None
    except IsADirectoryError:
        raise AcnImageError("not a regular file", f"{name}: not a regular file (a FIFO, device or folder)") from None
    except OSError as error:
        raise AcnImageError("missing file", f"{name}: cannot open ({error.strerror})") from None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise AcnImageError("not a regular file", f"{name}: not a regular file (a FIFO, device or folder)")
        if info.st_size > max_bytes:
            raise AcnImageError("too large", f"{name}: {info.st_size} bytes exceed max_image_bytes={max_bytes}")
        with os.fdopen(descriptor, "rb") as file:
            descriptor = None  # the file object closes it
            data = file.read(max_bytes + 1)
    except OSError as error:
        raise AcnImageError("missing file", f"{name}: cannot read ({error.strerror or error})") from None
    finally:
        if descriptor is not None:
            os.close(descriptor)
    if len(data) > max_bytes:  # the file grew after the check
        raise AcnImageError("too large", f"{name}: more than max_image_bytes={max_bytes} bytes")
    return decode_image_bytes(data, max_pixels, name), data


def _download_and_decode(
    url: str, max_pixels: int, timeout: float, max_bytes: int, allow_private_urls: bool, handle: FetchHandle
) -> tuple[Image.Image, bytes]:
    try:
        data, _ = fetch_url(url, timeout, max_bytes, allow_private_urls, handle)
    except UrlFetchError as error:
        if error.kind == "timed out":
            raise AcnImageError("timed out", f"{url}: downloading and decoding took more than {timeout:g} s") from None
        reason = {"too large": "too large", "empty": "empty file"}.get(error.kind, "download failed")
        raise AcnImageError(reason, f"{url}: {error}") from None
    try:
        return decode_image_bytes(data, max_pixels, url), data
    except AcnImageError as error:
        if error.reason == "corrupt":  # what the server sent instead of an image stays unsaid
            raise AcnImageError("download failed", f"{url}: {UNAVAILABLE}") from None
        raise


def _download_limits(timeout: float, max_bytes: int) -> tuple[float, int]:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"download_timeout must be a positive number of seconds, got {timeout!r}")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max_download_bytes must be a positive int, got {max_bytes!r}")
    return float(timeout), max_bytes


def _within_timeout(
    function: Callable[[], _T],
    timeout: float,
    name: str,
    action: str = "reading and decoding",
    on_give_up: Callable[[], None] | None = None,
) -> _T:
    """`function()` in a daemon thread; an `AcnImageError` when it has not finished after `timeout` seconds, after
    calling `on_give_up()` (a download closes its connection there, so that its thread ends too).

    A file read cannot be interrupted, so a hung read is left behind, but the caller goes on (and exits) without it.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = function()
        except BaseException as error:  # re-raised in the caller's thread
            outcome["error"] = error

    worker = threading.Thread(target=target, name=f"read {name}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        if on_give_up is not None:
            on_give_up()
        raise AcnImageError("timed out", f"{name}: {action} took more than {timeout:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class AcnImageProcessor(BaseImageProcessor):
    """Converts images to RGB, resizes them, rescales to [0, 1] and normalises with ImageNet mean and std.

    Every argument is a default kept on the instance; `preprocess` takes the same names as per-call overrides.
    A missing image (`None`) gives a zero tensor and `image_mask` False, so the model ignores its visual path.

    Args:
        size: output `{"height": h, "width": w}`, or an int for a square. Paper: 224x224 for VGG-16.
        resample: PIL resampling filter for the resize.
        rescale_factor: multiplies the 0-255 pixel values.
        image_mean: per-channel mean subtracted after rescaling.
        image_std: per-channel standard deviation divided by after rescaling.
        download_timeout: seconds that connecting, downloading and decoding an http(s) image may take together.
        max_download_bytes: the largest body an http(s) image may have; larger ones are refused unread.
    """

    model_input_names = ["pixel_values", "image_mask"]

    def __init__(
        self,
        size: int | dict[str, int] | None = None,
        resample: int = PILImageResampling.BILINEAR,
        rescale_factor: float = 1 / 255,
        image_mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
        image_std: Sequence[float] = IMAGENET_DEFAULT_STD,
        download_timeout: float = DOWNLOAD_TIMEOUT_SECONDS,
        max_download_bytes: int = MAX_DOWNLOAD_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.size = _size_dict(224 if size is None else size)
        self.resample = int(resample)
        self.rescale_factor = rescale_factor
        self.image_mean = _channel_values(image_mean, "image_mean")
        self.image_std = _channel_values(image_std, "image_std")
        self.download_timeout, self.max_download_bytes = _download_limits(download_timeout, max_download_bytes)

    @classmethod
    def for_backbone(cls, vision_backbone: str, **kwargs: Any) -> "AcnImageProcessor":
        """The processor whose resizing and normalisation follow `vision_backbone` (an `AcnConfig` backbone)."""
        if vision_backbone not in BACKBONE_PREPROCESSING:
            raise ValueError(
                f"vision_backbone must be one of {', '.join(BACKBONE_PREPROCESSING)}, got {vision_backbone!r}"
            )
        return cls(**{**BACKBONE_PREPROCESSING[vision_backbone], **kwargs})

    def preprocess(
        self,
        images: _ImageInputs,
        size: int | dict[str, int] | None = None,
        resample: int | None = None,
        rescale_factor: float | None = None,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        download_timeout: float | None = None,
        max_download_bytes: int | None = None,
        allow_private_urls: bool = False,
        return_tensors: str | None = "pt",
    ) -> BatchFeature:
        """Process one image or a list of images.

        Args:
            images: a PIL image, a uint8 numpy array (H, W), (H, W, 3) or (H, W, 4), a file path, an http:// or
                https:// URL (downloaded within `download_timeout` and `max_download_bytes`), or `None` for a
                missing image; or a list of those. An image that cannot be read raises `AcnImageError`.
            allow_private_urls: fetch URLs of loopback, private and link-local addresses too (your own network).
                Only per call, never a saved setting: a model folder cannot turn it on for the URLs its users send.
            return_tensors: `"pt"` for torch tensors, `"np"` or `None` for numpy arrays.

        Returns:
            A `BatchFeature` with `pixel_values` (batch, 3, height, width) float32 and `image_mask` (batch,) bool.
        """
        size = self.size if size is None else _size_dict(size)
        resample = self.resample if resample is None else int(resample)
        rescale_factor = self.rescale_factor if rescale_factor is None else rescale_factor
        mean = np.array(self.image_mean if image_mean is None else _channel_values(image_mean, "image_mean"))
        std = np.array(self.image_std if image_std is None else _channel_values(image_std, "image_std"))
        limits = _download_limits(
            self.download_timeout if download_timeout is None else download_timeout,
            self.max_download_bytes if max_download_bytes is None else max_download_bytes,
        )
        batch = list(images) if isinstance(images, (list, tuple)) else [images]
        if not batch:
            raise ValueError("images must hold at least one image or None")
        pixel_values = np.zeros((len(batch), 3, size["height"], size["width"]), dtype=np.float32)
        for index, image in enumerate(batch):
            if image is not None:
                rgb = upright_rgb(_open(image, index, *limits, allow_private_urls)).resize(
                    (size["width"], size["height"]), resample=resample
                )
                pixels = np.asarray(rgb, dtype=np.float32) * rescale_factor  # (height, width, 3)
                pixel_values[index] = ((pixels - mean) / std).transpose(2, 0, 1)  # (3, height, width)
        image_mask = np.array([image is not None for image in batch])  # (batch,)
        data = {"pixel_values": pixel_values, "image_mask": image_mask}
        return BatchFeature(data, tensor_type="np" if return_tensors is None else return_tensors)


AcnImageProcessor.register_for_auto_class("AutoImageProcessor")


def _open(
    image: _ImageInput, index: int, download_timeout: float, max_download_bytes: int, allow_private_urls: bool
) -> Image.Image:
    """A checked PIL image (mode and pixel limit) from any accepted input; orientation is applied later."""
    if isinstance(image, Image.Image):
        check_image(image, name=f"image {index}")
        return image
    if is_image_url(image):
        return load_image_url(
            image, timeout=download_timeout, max_bytes=max_download_bytes, allow_private_urls=allow_private_urls
        )[0]
    if isinstance(image, (str, os.PathLike)):
        return load_image_file(image)[0]
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise ValueError(
                f"image {index}: numpy images must be uint8 (H, W), (H, W, 3) or (H, W, 4), "
                f"got {image.dtype} {image.shape}"
            )
        opened = Image.fromarray(image)
        check_image(opened, name=f"image {index}")
        return opened
    raise ValueError(
        f"image {index}: expected a PIL image, a numpy array, a path, a URL or None, got {type(image).__name__}"
    )


def _size_dict(size: int | dict[str, int]) -> dict[str, int]:
    if isinstance(size, int):
        size = {"height": size, "width": size}
    if not isinstance(size, dict) or set(size) != {"height", "width"} or min(size.values()) < 1:
        raise ValueError(f"size must be a positive int or {{'height': h, 'width': w}}, got {size!r}")
    return {"height": int(size["height"]), "width": int(size["width"])}


def _channel_values(values: Iterable[float], name: str) -> tuple[float, float, float]:
    channels = tuple(float(v) for v in values)
    if len(channels) != 3:
        raise ValueError(f"{name} needs one value per RGB channel, got {channels!r}")
    return channels[0], channels[1], channels[2]


__all__ = [
    "BACKBONE_PREPROCESSING",
    "DOWNLOAD_TIMEOUT_SECONDS",
    "IMAGE_ERROR_REASONS",
    "MAX_DOWNLOAD_BYTES",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "AcnImageError",
    "AcnImageProcessor",
    "check_image",
    "decode_image_bytes",
    "is_image_url",
    "load_image_file",
    "load_image_url",
    "to_rgb",
    "exif_orientation",
    "upright_rgb",
]
