"""ACN's image side below the co-attention: the vision trunks (VGG-16 pool5, ResNet-152 layer4, CLIP ViT-B/32 patch
tokens), their published weights, and the precision a frozen trunk runs in (fp32, a bf16 copy, or the int8 copy of
`quantization_acn`).

Every trunk sees a 224 x 224 image and gives a 7 x 7 grid of regions, returned row-major as `(batch, 49, channels)`.
The trunk is `AcnModel.vision` itself (weights `acn.vision.*`): torchvision's or transformers' modules, untrained until
`AcnModel.load_vision_weights` loads the published weights or a file.
"""

import copy
import hashlib
import os

import torch
import torchvision
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from .configuration_acn import AcnConfig
from .quantization_acn import AcnInt8Calibration, calibration_key, int8_available, is_int8_calibrated, quantize_trunk

BACKBONE_INPUT_SIZE = 224  # every backbone sees 224 x 224 images: a 7 x 7 grid of regions
# torchvision's ResNet-152 children kept: the stem and layer1-4 (not the average pool and the classifier).
RESNET_TRUNK_CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
CLIP_CHECKPOINT = "openai/clip-vit-base-patch32"  # CLIPVisionConfig()'s defaults are this checkpoint's tower


def build_vision_backbone(vision_backbone: str) -> nn.Module:
    """The backbone with untrained weights (`AcnModel.load_vision_weights` loads the published ones)."""
    if vision_backbone == "vgg16":
        # VGG-16 ("D") conv trunk up to pool5, built alone: the 120M-parameter classifier is never needed
        return torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    if vision_backbone == "resnet152":
        # batch norm keeps torchvision's initialisation, with zero_init_residual: each block starts as the identity.
        # A frozen random trunk otherwise doubles its activations' variance in each of its 50 blocks (eval-mode
        # batch norm does not rescale), past float16's range, in which features are cached.
        resnet = torchvision.models.resnet152(weights=None, zero_init_residual=True)
        return nn.Sequential(*(getattr(resnet, name) for name in RESNET_TRUNK_CHILDREN))
    if vision_backbone == "clip-vit-b32":
        return CLIPVisionModel(CLIPVisionConfig())
    raise ValueError(f"vision_backbone must be 'vgg16', 'resnet152' or 'clip-vit-b32', got {vision_backbone!r}")


def backbone_regions(backbone: nn.Module, vision_backbone: str, pixel_values: torch.Tensor) -> torch.Tensor:
    """Run `backbone` (float or int8) and return its regions `(batch, 49, channels)` in row-major 7 x 7 order."""
    if vision_backbone == "clip-vit-b32":
        tokens = backbone(pixel_values=pixel_values).last_hidden_state  # (batch, 1 + 49, 768): CLS first
        return tokens[:, 1:]  # (batch, 49, 768)
    grid = backbone(pixel_values)  # (batch, channels, 7, 7)
    return grid.flatten(2).transpose(1, 2)  # (batch, 49, channels)


def load_vision_state(
    vision_backbone: str, path: str | os.PathLike | None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The backbone's state dict from `path` (None: the published weights) and the file's metadata."""
    from safetensors import safe_open

    state: dict[str, torch.Tensor]
    metadata: dict[str, str]
    if path is None:
        if vision_backbone == "clip-vit-b32":
            return CLIPVisionModel.from_pretrained(CLIP_CHECKPOINT).state_dict(), {}
        weights = {"vgg16": torchvision.models.VGG16_Weights, "resnet152": torchvision.models.ResNet152_Weights}[
            vision_backbone
        ]
        state, metadata = weights.IMAGENET1K_V1.get_state_dict(progress=True), {}
    elif str(path).endswith(".safetensors"):
        with safe_open(str(path), framework="pt") as file:
            state = {key: file.get_tensor(key) for key in file.keys()}
            metadata = file.metadata() or {}
    elif vision_backbone == "clip-vit-b32":
        return CLIPVisionModel.from_pretrained(path).state_dict(), {}
    else:
        state, metadata = torch.load(path, map_location="cpu", weights_only=True), {}
    if vision_backbone == "vgg16" and any(key.startswith("features.") for key in state):
        state = {key.removeprefix("features."): value for key, value in state.items() if key.startswith("features.")}
    if vision_backbone == "resnet152" and "conv1.weight" in state:
        state = {_resnet_trunk_key(key): value for key, value in state.items() if not key.startswith("fc.")}
    return state, metadata


def _resnet_trunk_key(key: str) -> str:
    """torchvision ResNet key -> its name in the trunk's `nn.Sequential`
    (`layer1.0.conv1.weight` -> `4.0.conv1.weight`)."""
    child, rest = key.split(".", 1)
    return f"{RESNET_TRUNK_CHILDREN.index(child)}.{rest}"


def check_pixel_values(pixel_values: torch.Tensor, batch: int | None = None) -> None:
    expected_batch = pixel_values.shape[0] if batch is None else batch
    if tuple(pixel_values.shape) != (expected_batch, 3, BACKBONE_INPUT_SIZE, BACKBONE_INPUT_SIZE):
        raise ValueError(
            f"pixel_values must have shape ({'batch' if batch is None else batch}, 3, {BACKBONE_INPUT_SIZE}, "
            f"{BACKBONE_INPUT_SIZE}), got shape {tuple(pixel_values.shape)}"
        )


def trunk_digest(trunk: nn.Module) -> str:
    """SHA-256 of a trunk's state dict (names, dtypes, shapes and bytes): which weights computed a set of features."""
    digest = hashlib.sha256()
    for name, tensor in trunk.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def parameter_versions(module: nn.Module) -> tuple[int, ...]:
    """The in-place versions of a module's parameters: they change when an optimiser or `load_state_dict` writes
    them (inference tensors, made under inference_mode, cannot change and keep no version)."""
    return tuple(0 if parameter.is_inference() else parameter._version for parameter in module.parameters())


# --- precision -------------------------------------------------------------------------------------------------------


def supports_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def runnable_vision_precision(config: AcnConfig, device: torch.device) -> str:
    """The precision `config.vision_precision` asks for on `device`, calibration aside."""
    requested = config.vision_precision
    if requested in ("auto", "int8") and device.type == "cpu" and config.freeze_vision and int8_available():
        return "int8"
    if requested in ("auto", "bf16") and supports_bf16(device):
        return "bf16"
    return "fp32"


def effective_vision_precision(config: AcnConfig, device: torch.device) -> str:
    """See `AcnModel.effective_vision_precision`."""
    precision = runnable_vision_precision(config, device)
    if precision == "int8" and not is_int8_calibrated(config):
        if config.vision_precision == "int8":
            raise ValueError(
                "vision_precision='int8' needs the backbone's activation ranges: call calibrate_vision(pixel_values) "
                "with a few images first"
            )
        return "bf16" if supports_bf16(device) else "fp32"
    return precision


class AcnDerivedTrunks:
    """The frozen trunk's copy in bf16 (weights cast once, where autocast casts them on every call: about 1.2x faster
    on CPU) or int8, kept while the weights (their in-place versions), the calibration and the device stay the same."""

    def __init__(self) -> None:
        self._copies: dict[tuple, nn.Module] = {}

    def clear(self) -> None:
        self._copies.clear()

    def get(
        self,
        trunk: nn.Module,
        config: AcnConfig,
        precision: str,
        pixel_values: torch.Tensor,
        calibration: AcnInt8Calibration | None = None,
    ) -> nn.Module:
        """The copy of `trunk` in `precision` (`"int8"` from `calibration`, `AcnModel.vision_int8`)."""
        int8_key = calibration_key(calibration) if precision == "int8" else None
        key = (precision, str(pixel_values.device), int8_key, parameter_versions(trunk))
        if key not in self._copies:
            self._copies.clear()
            if precision == "bf16":
                layout = torch.preserve_format if config.vision_backbone == "clip-vit-b32" else torch.channels_last
                # two calls: torch's stubs have no overload of Module.to taking both
                self._copies[key] = copy.deepcopy(trunk).to(dtype=torch.bfloat16).to(memory_format=layout)
            else:
                self._copies[key] = quantize_trunk(trunk, config.vision_backbone, calibration, pixel_values[:1])
        return self._copies[key]


__all__ = [
    "BACKBONE_INPUT_SIZE",
    "AcnDerivedTrunks",
    "backbone_regions",
    "build_vision_backbone",
    "check_pixel_values",
    "effective_vision_precision",
    "load_vision_state",
    "runnable_vision_precision",
    "parameter_versions",
    "supports_bf16",
    "trunk_digest",
]
