"""The image feature cache: a corpus's image regions computed once by a model's vision trunk (VGG-16 pool5,
ResNet-152 layer4 or CLIP ViT-B/32 patch tokens) and stored as a dataset column, so that training never runs the trunk.

The trunk that computed the features is written beside them (`VISION_WEIGHTS_FILE`, with its backbone, precision and
int8 calibration in the file's metadata): a model trained on the features sees pictures through the same trunk.
"""

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import datasets
import torch
from datasets import Array2D, Dataset, DatasetDict, Value
from datasets.fingerprint import Hasher
from transformers.image_processing_utils import BaseImageProcessor

from modeling_acn.configuration_acn import INT8_CALIBRATION_FIELDS
from modeling_acn.vision_acn import trunk_digest

from .atomic import atomic_folder

if TYPE_CHECKING:
    from modeling_acn import AcnForTokenClassification, AcnImageProcessor, AcnModel

logger = logging.getLogger(__name__)

# Written beside cached features: the backbone that computed them (any backbone, despite the historical name), its
# metadata naming the backbone, the effective precision and the int8 calibration.
VISION_WEIGHTS_FILE = "vgg16_trunk.safetensors"
FEATURE_CACHE_VERSION = 3  # bump when the stored features change meaning, to invalidate old caches (3: trunk id column)
CACHE_COLUMNS = ("image_id", "image_features", "image_mask")  # what acn-predict reads of a cache
TRUNK_COLUMN = "image_features_trunk"  # which trunk computed a row's features: `AcnModel.vision_trunk_id()`
TRUNK_KEY = "vision_trunk_id"  # the same, in the metadata of the trunk file written beside the features
CALIBRATION_IMAGES = 16  # the first training images with a picture calibrate an int8 backbone


# --- image feature cache -----------------------------------------------------------------------


def vision_trunk(model: torch.nn.Module) -> torch.nn.Module:
    """The part of an ACN model that computes image features (any other model: all of it)."""
    for name in ("acn.vision", "vision"):
        try:
            return model.get_submodule(name)
        except AttributeError:
            continue
    return model


def trunk_id(model: torch.nn.Module) -> str | None:
    """`vision_trunk_id()` of an ACN model: its backbone and the digest of its trunk's weights (None for other
    models, tests' stand-ins)."""
    vision_trunk_id = getattr(model, "vision_trunk_id", None)
    return None if vision_trunk_id is None else vision_trunk_id()


def vision_settings(model: torch.nn.Module) -> dict[str, Any]:
    """What, beside the weights, decides the features: backbone, effective precision (on the model's device, not
    the configured one) and int8 calibration. Models without an ACN config (tests' stand-ins) have none."""
    config = getattr(model, "config", None)
    effective_vision_precision = getattr(model, "effective_vision_precision", None)
    if config is None or effective_vision_precision is None:
        return {}
    precision = effective_vision_precision(next(model.parameters()).device)
    # AcnModel.vision_int8 (None for CLIP, quantised per batch); the head's AcnModel is its base_model
    calibration = getattr(model.base_model, "vision_int8", None) if precision == "int8" else None
    arrays = dict.fromkeys(INT8_CALIBRATION_FIELDS) if calibration is None else calibration.arrays()
    return {"vision_backbone": config.vision_backbone, "vision_precision": precision, **arrays}


def read_vision_settings(path: Path) -> dict[str, Any]:
    """The backbone, precision, int8 calibration and trunk id recorded in a `cache-features` weights file ({}
    without one)."""
    from safetensors import safe_open

    if not Path(path).is_file():
        return {}
    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata() or {}
    return {key: json.loads(value) if key in INT8_CALIBRATION_FIELDS else value for key, value in metadata.items()}


def image_features_fingerprint(dataset: Dataset, model: torch.nn.Module, image_processor: BaseImageProcessor) -> str:
    """Same dataset, backbone weights, effective precision and calibration, and processor settings -> same
    fingerprint -> datasets reuses the cache file. A model trained on top of a backbone keeps that backbone's cache."""
    weights = trunk_id(model) or trunk_digest(
        vision_trunk(model)
    )  # an ACN model's id holds the same digest, computed once
    parts = [FEATURE_CACHE_VERSION, dataset._fingerprint, weights, vision_settings(model), image_processor.to_dict()]
    return Hasher.hash(parts)


def features_shape(model: torch.nn.Module) -> tuple[int, int]:
    """(regions, channels) of the model's image features; VGG-16 pool5's for models without an ACN config."""
    config = getattr(model, "config", None)
    return (config.num_image_regions, config.image_feature_dim) if config is not None else (49, 512)


class PoolFeatureBatch:
    """`Dataset.map` function: a batch of images (None allowed) -> pool5 features and image mask."""

    def __init__(self, model: torch.nn.Module, image_processor: BaseImageProcessor) -> None:
        self.model = model
        # the model must have it (`cache_image_features`); nn.Module's attribute types cannot say so
        self.get_image_features = cast(Callable[[torch.Tensor], torch.Tensor], model.get_image_features)
        self.image_processor = image_processor
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype  # half-precision models get half-precision pixels
        self.shape = features_shape(model)
        self.trunk = trunk_id(model)
        self.num_images = 0

    @torch.inference_mode()
    def __call__(self, images: list) -> dict[str, Any]:
        inputs = self.image_processor(images=images, return_tensors="pt")
        image_mask = inputs["image_mask"].bool()  # (batch,)
        features = torch.zeros(len(images), *self.shape, dtype=torch.float16)  # (batch, 49, channels)
        if image_mask.any():
            pixel_values = inputs["pixel_values"][image_mask].to(self.device, self.dtype)  # (images, 3, 224, 224)
            pooled = self.get_image_features(pixel_values)  # (images, 49, channels)
            features[image_mask] = pooled.to("cpu", torch.float16)
        self.num_images += int(image_mask.sum())
        columns = {"image_features": features.numpy(), "image_mask": image_mask.numpy()}
        if self.trunk is not None:
            columns[TRUNK_COLUMN] = [self.trunk] * len(images)
        return columns


def cache_image_features(
    dataset: Dataset,
    model: torch.nn.Module,
    image_processor: BaseImageProcessor,
    *,
    batch_size: int = 32,
    cache_dir: str | Path | None = None,
) -> Dataset:
    """Add ``image_features`` (float16, ``(49, channels)`` backbone regions, zeros without an image), ``image_mask``
    and, for an ACN model, ``image_features_trunk`` (its `vision_trunk_id()`, which a model trained or evaluated on
    the features must share).

    Runs ``image_processor`` and ``model.get_image_features`` once per image through a batched
    `Dataset.map`; the result is an Arrow file in ``cache_dir`` named by the dataset's fingerprint, the
    weights' hash and the processor's settings, so a second call with the same inputs is a cache hit.

    Args:
        dataset: a split with an ``image`` column.
        model: exposes ``get_image_features(pixel_values) -> (batch, 49, channels)``; put it on its device first.
        image_processor: ``image_processor(images=..., return_tensors="pt")`` gives ``pixel_values`` and
            ``image_mask``; ``to_dict()`` gives its settings.
        batch_size: images per forward pass.
        cache_dir: where the Arrow files go; defaults to ``<HF_DATASETS_CACHE>/acn_image_features``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if "image" not in dataset.column_names:
        raise ValueError(f"dataset has no 'image' column, only {dataset.column_names}")
    cache_dir = Path(cache_dir or Path(datasets.config.HF_DATASETS_CACHE) / "acn_image_features")
    cache_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = image_features_fingerprint(dataset, model, image_processor)
    features = dataset.features.copy()
    features["image_features"] = Array2D(shape=features_shape(model), dtype="float16")
    features["image_mask"] = Value("bool")
    if trunk_id(model) is not None:
        features[TRUNK_COLUMN] = Value("string")
    cache_file = cache_dir / f"image-features-{fingerprint}.arrow"
    cache_hit = cache_file.is_file() and datasets.is_caching_enabled()
    extract = PoolFeatureBatch(model, image_processor)
    start = time.perf_counter()
    cached = dataset.map(
        extract,
        input_columns="image",
        batched=True,
        batch_size=batch_size,
        features=features,
        new_fingerprint=fingerprint,
        cache_file_name=str(cache_file),
        desc="image features",
    )
    seconds = time.perf_counter() - start
    if cache_hit:
        logger.info("image features: cache hit %s (%.1f s)", cache_file, seconds)
    else:
        logger.info(
            "image features: %d images in %.1f s (%.1f images/s)",
            extract.num_images,
            seconds,
            extract.num_images / seconds,
        )
    return cached


class FeatureCache(Mapping):
    """`image_id -> (49, 512) features, or None for a tweet cached without an image`, read from the cached dataset
    (memory-mapped Arrow) when asked for, so that only the index of image ids is held in memory."""

    def __init__(self, table: datasets.Dataset) -> None:
        self.table = table.select_columns(list(CACHE_COLUMNS)).with_format("torch")
        self.positions = {image_id: position for position, image_id in enumerate(table["image_id"])}

    @classmethod
    def load(cls, path: Path, split: str | None) -> "FeatureCache":
        cached = datasets.load_from_disk(str(path))
        if isinstance(cached, datasets.DatasetDict):
            if split is None and len(cached) != 1:
                raise ValueError(
                    f"feature cache {str(path)!r} holds splits {sorted(cached)}; choose one with --feature_split"
                )
            if split is not None and split not in cached:
                raise ValueError(f"feature cache {str(path)!r} has no split {split!r}, only {sorted(cached)}")
            cached = cached[split or next(iter(cached))]
        missing = [column for column in CACHE_COLUMNS if column not in cached.column_names]
        if missing:
            raise ValueError(
                f"feature cache {str(path)!r} lacks columns {missing}; build it with `acn-dataset cache-features`"
            )
        return cls(cached)

    def __getitem__(self, image_id: str) -> torch.Tensor | None:
        record = self.table[self.positions[image_id]]
        return record["image_features"] if bool(record["image_mask"]) else None  # (49, 512)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self.positions

    def __iter__(self) -> Iterator[str]:
        return iter(self.positions)

    def __len__(self) -> int:
        return len(self.positions)


def feature_extractor(
    model: str | None = None,
    vision_weights: str | None = None,
    vision_backbone: str = "vgg16",
    vision_precision: str | None = None,
    seed: int = 0,
) -> "tuple[AcnForTokenClassification | AcnModel, AcnImageProcessor]":
    """The model whose trunk computes the features, and the image processor that prepares its input: an ACN
    checkpoint (`model`, a folder or Hub id), or a bare trunk with `vision_weights` ('imagenet', a file, or 'random'
    seeded by `seed`)."""
    from modeling_acn import (
        AcnConfig,
        AcnForTokenClassification,
        AcnImageProcessor,
        AcnModel,
    )

    precision: dict[str, Any] = {"vision_precision": vision_precision} if vision_precision else {}
    if model:
        return AcnForTokenClassification.from_pretrained(model, **precision), AcnImageProcessor.from_pretrained(model)
    torch.manual_seed(seed)
    extractor = AcnModel(AcnConfig(vision_backbone=vision_backbone, **precision))
    if vision_weights != "random":
        extractor.load_vision_weights(None if vision_weights == "imagenet" else vision_weights)
    return extractor, AcnImageProcessor.for_backbone(vision_backbone)


def calibrate_if_needed(
    model: "AcnForTokenClassification | AcnModel",
    image_processor: BaseImageProcessor,
    train_split: Dataset,
    count: int,
    device: str | torch.device,
) -> None:
    """Calibrate an int8 backbone on the first `count` training images with a picture (deterministic)."""
    if not model.needs_vision_calibration(device):
        return
    images = []
    for row in train_split.select_columns("image"):  # decodes only as many images as it needs
        if row["image"] is not None:
            images.append(row["image"])
        if len(images) == count:
            break
    if not images:
        raise ValueError("the int8 backbone needs training images to calibrate on; pass --vision_precision fp32")
    pixel_values = image_processor(images=images, return_tensors="pt")["pixel_values"].to(
        device
    )  # (count, 3, 224, 224)
    started = time.perf_counter()
    model.calibrate_vision(pixel_values)
    logger.info(
        "int8 backbone calibrated on %d training images (%.1f s)", len(pixel_values), time.perf_counter() - started
    )


def check_features_output_dir(output_dir: Path, splits: Iterable[str]) -> None:
    """cache-features replaces its output folder as a whole: refuse one that holds anything it did not write."""
    if not output_dir.exists():
        return
    own = {"dataset_dict.json", VISION_WEIGHTS_FILE, *splits}
    foreign = sorted(path.name for path in output_dir.iterdir() if path.name not in own)
    if foreign:
        raise ValueError(
            f"output_dir {str(output_dir)!r} holds files cache-features did not write ({', '.join(foreign)}); "
            "choose a new folder"
        )


def save_feature_cache(
    dataset: DatasetDict,
    model: "AcnForTokenClassification | AcnModel",
    image_processor: BaseImageProcessor,
    output_dir: str | Path,
    *,
    device: str | torch.device = "cpu",
    calibration_images: int = CALIBRATION_IMAGES,
    batch_size: int = 32,
    cache_dir: str | Path | None = None,
) -> None:
    """Every split of `dataset` with its image features (`cache_image_features`), saved with `save_to_disk` into a
    new `output_dir`, and the trunk that computed them beside them (`VISION_WEIGHTS_FILE`). An int8 trunk is first
    calibrated on the first `calibration_images` training images."""
    from safetensors.torch import save_file

    output_dir = Path(output_dir)
    check_features_output_dir(output_dir, dataset.keys())
    model = model.to(device).eval()  # type: ignore[arg-type]  # transformers' @wraps-ed `to` loses its self binding
    calibrate_if_needed(model, image_processor, dataset["train"], calibration_images, device)
    logger.info("image backbone: %s in %s", model.config.vision_backbone, model.effective_vision_precision(device))
    cached = DatasetDict(
        {
            split: cache_image_features(part, model, image_processor, batch_size=batch_size, cache_dir=cache_dir)
            for split, part in dataset.items()
        }
    )
    with atomic_folder(output_dir) as temporary:
        cached.save_to_disk(str(temporary))
        # the backbone beside the features: a model trained on them must see images through the same weights,
        # precision and calibration
        trunk = vision_trunk(model).state_dict()
        metadata = {
            key: json.dumps(value) if key in INT8_CALIBRATION_FIELDS else value
            for key, value in vision_settings(model).items()
            if value is not None
        }
        metadata[TRUNK_KEY] = trunk_id(model)
        save_file(
            {key: value.contiguous() for key, value in trunk.items()},
            temporary / VISION_WEIGHTS_FILE,
            metadata=metadata,
        )
    logger.info("wrote %s", output_dir)


__all__ = [
    "CALIBRATION_IMAGES",
    "FeatureCache",
    "VISION_WEIGHTS_FILE",
    "cache_image_features",
    "calibrate_if_needed",
    "feature_extractor",
    "read_vision_settings",
    "save_feature_cache",
]
