"""AcnImageProcessor: every image mode to normalised 224 x 224 RGB, missing images, per-call overrides, EXIF rotation,
save and reload, and errors that name the bad value."""

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_acn.image_processing_acn import AcnImageProcessor

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
ONE_PIXEL = {"height": 1, "width": 1}  # no resampling, so values can be checked by hand


def normalised(rgb) -> torch.Tensor:
    """Hand computation of the expected (3,) pixel: rescale by 1/255, then ImageNet mean and std."""
    return torch.tensor((np.array(rgb) / 255 - MEAN) / STD, dtype=torch.float32)


def one_pixel(mode: str, value) -> Image.Image:
    return Image.new(mode, (1, 1), value)


def palette_image(transparent: bool) -> Image.Image:
    image = Image.new("P", (1, 1), 1)
    image.putpalette([10, 20, 30, 40, 50, 60])
    if transparent:
        image.info["transparency"] = 1
    return image


@pytest.fixture
def processor():
    return AcnImageProcessor()


@pytest.mark.parametrize(
    "image, rgb",
    [
        (one_pixel("RGB", (10, 20, 30)), (10, 20, 30)),
        (one_pixel("L", 128), (128, 128, 128)),
        (palette_image(transparent=False), (40, 50, 60)),
        (palette_image(transparent=True), (255, 255, 255)),  # transparent palette entry shows the white background
        (one_pixel("RGBA", (10, 20, 30, 255)), (10, 20, 30)),
        (one_pixel("RGBA", (10, 20, 30, 0)), (255, 255, 255)),
        (one_pixel("LA", (0, 0)), (255, 255, 255)),
        (one_pixel("CMYK", (0, 255, 55, 0)), (255, 0, 200)),  # R = 255 - C, G = 255 - M, B = 255 - Y at K = 0
        (Image.fromarray(np.array([[25700]], dtype=np.uint16)), (100, 100, 100)),  # I;16: 25700 / 257
        (Image.fromarray(np.array([[65535]], dtype=np.uint16)), (255, 255, 255)),
        (one_pixel("I", 65535), (255, 255, 255)),
        (one_pixel("1", 1), (255, 255, 255)),
    ],
    ids=["RGB", "L", "P", "P-transparent", "RGBA-opaque", "RGBA-clear", "LA", "CMYK", "I;16", "I;16-max", "I", "1"],
)
def test_every_mode_becomes_normalised_rgb(processor, image, rgb):
    pixel_values = processor(image, size=ONE_PIXEL)["pixel_values"]
    assert pixel_values.shape == (1, 3, 1, 1) and pixel_values.dtype == torch.float32
    assert torch.allclose(pixel_values[0, :, 0, 0], normalised(rgb), atol=1e-6)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16"])
def test_default_output_is_224_square(processor, mode):
    image = Image.new(mode, (50, 30))
    assert processor(image)["pixel_values"].shape == (1, 3, 224, 224)


def test_uniform_image_keeps_its_value_through_resizing(processor):
    image = Image.new("RGB", (300, 180), (200, 100, 50))
    pixel_values = processor([image])["pixel_values"][0]  # (3, 224, 224)
    expected = normalised((200, 100, 50))[:, None, None].expand(3, 224, 224)
    assert torch.allclose(pixel_values, expected, atol=1e-6)


def test_missing_image_gives_zeros_and_false_mask(processor):
    image = Image.new("RGB", (8, 8), (255, 0, 0))
    output = processor([None, image, None])
    assert output["image_mask"].tolist() == [False, True, False]
    assert output["image_mask"].dtype == torch.bool
    assert output["pixel_values"][[0, 2]].eq(0).all() and output["pixel_values"][1].ne(0).any()


def test_per_call_overrides_leave_instance_defaults(processor):
    image = Image.new("RGB", (64, 48), (255, 255, 255))
    assert processor(image, size={"height": 32, "width": 48})["pixel_values"].shape == (1, 3, 32, 48)
    assert processor(image, size=16)["pixel_values"].shape == (1, 3, 16, 16)
    raw = processor(image, size=ONE_PIXEL, image_mean=(0, 0, 0), image_std=(1, 1, 1))["pixel_values"]
    assert torch.allclose(raw, torch.ones(1, 3, 1, 1))
    assert processor.size == {"height": 224, "width": 224}
    assert processor(image)["pixel_values"].shape == (1, 3, 224, 224)
    assert AcnImageProcessor(size=100)(image)["pixel_values"].shape == (1, 3, 100, 100)


def test_numpy_arrays_and_paths_are_accepted(processor, tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGBA", (4, 4), (10, 20, 30, 255)).save(path)
    gray = np.full((3, 5), 128, dtype=np.uint8)
    output = processor([str(path), path, gray], size=ONE_PIXEL, return_tensors="np")
    assert isinstance(output["pixel_values"], np.ndarray)
    assert np.allclose(output["pixel_values"][0, :, 0, 0], normalised((10, 20, 30)).numpy(), atol=1e-6)
    assert np.allclose(output["pixel_values"][1], output["pixel_values"][0])
    assert np.allclose(output["pixel_values"][2, :, 0, 0], normalised((128, 128, 128)).numpy(), atol=1e-6)


def test_bad_inputs_are_named(processor):
    with pytest.raises(
        ValueError,
        match=r"image 1: numpy images must be uint8 \(H, W\), \(H, W, 3\) or \(H, W, 4\), "
        r"got float32 \(2, 2, 3\)",
    ):
        processor([None, np.zeros((2, 2, 3), dtype=np.float32)])
    with pytest.raises(
        ValueError, match="image 0: expected a PIL image, a numpy array, a path, a URL or None, got int"
    ):
        processor([3])
    with pytest.raises(ValueError, match="images must hold at least one image or None"):
        processor([])
    with pytest.raises(ValueError, match=r"size must be a positive int or \{'height': h, 'width': w\}, got \{'h': 3\}"):
        processor(Image.new("RGB", (2, 2)), size={"h": 3})
    with pytest.raises(ValueError, match=r"image_std needs one value per RGB channel, got \(0\.5,\)"):
        AcnImageProcessor(image_std=[0.5])


def test_save_and_reload_keep_the_settings(tmp_path):
    processor = AcnImageProcessor(size={"height": 20, "width": 30}, image_mean=(0.5, 0.5, 0.5))
    processor.save_pretrained(tmp_path)
    reloaded = AcnImageProcessor.from_pretrained(tmp_path)
    assert reloaded.size == {"height": 20, "width": 30}
    assert reloaded.image_mean == (0.5, 0.5, 0.5)
    image = Image.new("RGB", (7, 9), (1, 2, 3))
    assert torch.equal(processor(image)["pixel_values"], reloaded(image)["pixel_values"])


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    upright = AcnImageProcessor()(images=[str(tmp_path / "rotated.jpg")], return_tensors="pt")["pixel_values"][0]
    plain = AcnImageProcessor()(images=[image.rotate(-90, expand=True)], return_tensors="pt")["pixel_values"][0]
    assert (upright - plain).abs().mean() < 0.1
