"""Image processor for ACN: any tweet image to a normalised 224x224 RGB tensor for the VGG-16 trunk."""

import os

import numpy as np
from PIL import Image, ImageOps
from transformers import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling


WHITE = (255, 255, 255, 255)  # transparent pixels are shown on white, as a browser shows a tweet's image
# PIL clips these to 255 instead of scaling them; "I" is how older Pillow versions load 16-bit PNGs.
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
SIXTEEN_TO_EIGHT_BIT = 257  # 65535 / 255


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
    """

    model_input_names = ["pixel_values", "image_mask"]

    def __init__(
        self,
        size: int | dict[str, int] | None = None,
        resample: int = PILImageResampling.BILINEAR,
        rescale_factor: float = 1 / 255,
        image_mean: tuple[float, float, float] = IMAGENET_DEFAULT_MEAN,
        image_std: tuple[float, float, float] = IMAGENET_DEFAULT_STD,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.size = _size_dict(224 if size is None else size)
        self.resample = int(resample)
        self.rescale_factor = rescale_factor
        self.image_mean = _channel_values(image_mean, "image_mean")
        self.image_std = _channel_values(image_std, "image_std")

    def preprocess(
        self,
        images,
        size: int | dict[str, int] | None = None,
        resample: int | None = None,
        rescale_factor: float | None = None,
        image_mean: tuple[float, float, float] | None = None,
        image_std: tuple[float, float, float] | None = None,
        return_tensors: str | None = "pt",
    ) -> BatchFeature:
        """Process one image or a list of images.

        Args:
            images: a PIL image, a uint8 numpy array (H, W), (H, W, 3) or (H, W, 4), a file path, or `None`
                for a missing image; or a list of those.
            return_tensors: `"pt"` for torch tensors, `"np"` or `None` for numpy arrays.

        Returns:
            A `BatchFeature` with `pixel_values` (batch, 3, height, width) float32 and `image_mask` (batch,) bool.
        """
        size = self.size if size is None else _size_dict(size)
        resample = self.resample if resample is None else int(resample)
        rescale_factor = self.rescale_factor if rescale_factor is None else rescale_factor
        mean = np.array(self.image_mean if image_mean is None else _channel_values(image_mean, "image_mean"))
        std = np.array(self.image_std if image_std is None else _channel_values(image_std, "image_std"))
        batch = list(images) if isinstance(images, (list, tuple)) else [images]
        if not batch:
            raise ValueError("images must hold at least one image or None")
        pixel_values = np.zeros((len(batch), 3, size["height"], size["width"]), dtype=np.float32)
        for index, image in enumerate(batch):
            if image is not None:
                rgb = _to_rgb(_open(image, index)).resize((size["width"], size["height"]), resample=resample)
                pixels = np.asarray(rgb, dtype=np.float32) * rescale_factor  # (height, width, 3)
                pixel_values[index] = ((pixels - mean) / std).transpose(2, 0, 1)  # (3, height, width)
        image_mask = np.array([image is not None for image in batch])  # (batch,)
        data = {"pixel_values": pixel_values, "image_mask": image_mask}
        return BatchFeature(data, tensor_type="np" if return_tensors is None else return_tensors)


AcnImageProcessor.register_for_auto_class("AutoImageProcessor")


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB view of a PIL image of any mode: transparency is composited on white, 16-bit values scaled to 8 bits."""
    if image.mode == "RGB":
        return image
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64) / SIXTEEN_TO_EIGHT_BIT  # (height, width)
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE), rgba).convert("RGB")
    return image.convert("RGB")


def _open(image, index: int) -> Image.Image:
    if isinstance(image, Image.Image):
        return ImageOps.exif_transpose(image)  # phone photos: upright, as the corpus loader stores them
    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as opened:
            opened.load()
            return ImageOps.exif_transpose(opened)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise ValueError(
                f"image {index}: numpy images must be uint8 (H, W), (H, W, 3) or (H, W, 4), "
                f"got {image.dtype} {image.shape}"
            )
        return Image.fromarray(image)
    raise ValueError(f"image {index}: expected a PIL image, a numpy array, a path or None, got {type(image).__name__}")


def _size_dict(size: int | dict[str, int]) -> dict[str, int]:
    if isinstance(size, int):
        size = {"height": size, "width": size}
    if not isinstance(size, dict) or set(size) != {"height", "width"} or min(size.values()) < 1:
        raise ValueError(f"size must be a positive int or {{'height': h, 'width': w}}, got {size!r}")
    return {"height": int(size["height"]), "width": int(size["width"])}


def _channel_values(values, name: str) -> tuple[float, float, float]:
    values = tuple(float(v) for v in values)
    if len(values) != 3:
        raise ValueError(f"{name} needs one value per RGB channel, got {values!r}")
    return values


__all__ = ["AcnImageProcessor"]
