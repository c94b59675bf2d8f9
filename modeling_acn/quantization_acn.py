"""int8 quantisation of ACN's frozen vision trunk on x86 CPUs, through torch.ao (oneDNN / FBGEMM kernels).

The model never depends on this file for its function: `AcnModel.get_image_features` asks for an int8 copy of the
trunk when `vision_precision` resolves to int8 (`vision_acn.AcnDerivedTrunks`). `AcnModel.calibrate_vision` keeps what
`int8_calibration` computes in an `AcnInt8Calibration` (`AcnModel.vision_int8`), whose buffers are saved with the
weights (`acn.vision_int8.*` in model.safetensors) while the config records only that the trunk is calibrated
(`vision_int8_points`); the same int8 trunk is rebuilt from them and the trunk's weights on every load. How the
calibration was chosen, and the deviation it gives, is in docs/int8.md.

- CLIP ViT-B/32: dynamic quantisation of its linear layers (activation ranges taken per batch; no calibration).
- VGG-16: activation equalisation, ranges with the largest value on level `INT8_LARGEST_LEVEL` of a 7-bit grid, and
  bias correction of the weights' rounding (see `INT8_EQUALISATION_EXPONENT`).
- ResNet-152: per quantisation point, the range torch's `HistogramObserver` picks.
"""

import copy
import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.ao.quantization import QConfig, QConfigMapping
from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver, ObserverBase, PerChannelMinMaxObserver
from torch.fx import GraphModule

from .configuration_acn import AcnConfig

# int8 runs through torch.ao on x86 CPUs (oneDNN / FBGEMM kernels with VNNI or AVX2). It is auto's choice there: on
# the 2-core EPYC of benchmarks/speed.py it ran VGG-16 about 5x faster than fp32 with VNNI and 2.7x on AVX2 alone,
# where a bf16 copy gained 2.5x at best.
INT8_ENGINE = "x86"
# int8 calibration of the CNN backbones, chosen on the deviation of VGG-16's features from fp32 on both kernel kinds
# (docs/int8.md). Activation equalisation: each VGG-16 conv but the last divides its output channel
# c by s_c = (m_c / max m) ** INT8_EQUALISATION_EXPONENT, m_c the channel's largest value on the calibration images,
# and the next conv multiplies its input channel c by s_c: the same float function, with channels that fill the
# per-tensor int8 grid more evenly. Grid: activations use a 7-bit grid (scale = range / 127, which AVX2 kernels need
# against overflow in their 8-bit multiply-add) stored in 8 bits (levels up to 255), and the largest calibration value
# of a non-negative activation is put on level INT8_LARGEST_LEVEL: finer steps than [0, max] on 127 levels, with room
# for pictures brighter than the calibration ones. Bias correction: rounding each conv's weights to int8 shifts its
# outputs by a mean of sum(ΔW) · E[x]; that amount, measured on the calibration images, is taken off its bias.
INT8_EQUALISATION_EXPONENT = 0.5
INT8_LARGEST_LEVEL = 224
INT8_SMALLEST_RATIO = 1e-4  # m_c / max m of a channel that stayed 0 on the calibration images (no zero scale)


def int8_available() -> bool:
    """Whether this torch build has the x86 int8 kernels."""
    return INT8_ENGINE in torch.backends.quantized.supported_engines


def is_int8_calibrated(config: AcnConfig) -> bool:
    """Whether the int8 trunk can be built: the weights hold its calibration (CLIP needs none: dynamic quantisation)."""
    return config.vision_backbone == "clip-vit-b32" or config.vision_int8_points is not None


class AcnInt8Calibration(nn.Module):
    """The int8 calibration of a CNN trunk, as buffers saved with the model's weights (`acn.vision_int8.*`); the
    int8 trunk is rebuilt from them and the float trunk's weights (`quantize_trunk`).

    Buffers (float32):
        ranges `(points, 2)`: the activation range `[min, max]` of each quantisation point, in the order of the
            trunk's traced graph.
        channel_scales `(sum of conv_channels[:-1],)`, VGG-16 only: the equalisation scale of each output channel of
            each conv but the last, conv after conv (1: not equalised).
        bias_corrections `(sum of conv_channels,)`, VGG-16 only: what is taken off each conv's bias, per output
            channel, conv after conv (0: not corrected).

    Args:
        points (`int`): the trunk's quantisation points (`AcnConfig.vision_int8_points`).
        conv_channels (`list[int]`): VGG-16's output channels per conv, in order; None for ResNet-152.
    """

    ranges: torch.Tensor
    channel_scales: torch.Tensor
    bias_corrections: torch.Tensor

    def __init__(self, points: int, conv_channels: Sequence[int] | None = None) -> None:
        super().__init__()
        self.conv_channels = None if conv_channels is None else list(conv_channels)
        self.register_buffer("ranges", torch.zeros(points, 2, dtype=torch.float32))  # (points, 2)
        if self.conv_channels is not None:
            self.register_buffer("channel_scales", torch.ones(sum(self.conv_channels[:-1]), dtype=torch.float32))
            self.register_buffer("bias_corrections", torch.zeros(sum(self.conv_channels), dtype=torch.float32))

    @classmethod
    def for_trunk(cls, trunk: nn.Module, vision_backbone: str, points: int) -> "AcnInt8Calibration":
        """Placeholders (ranges 0, scales 1, corrections 0) shaped for this float trunk, which may be on the meta
        device: `from_pretrained` loads the values."""
        return cls(points, _conv_channels(trunk) if vision_backbone == "vgg16" else None)

    @classmethod
    def from_arrays(
        cls, trunk: nn.Module, vision_backbone: str, arrays: Mapping[str, list | None]
    ) -> "AcnInt8Calibration":
        """The calibration that these arrays give (`INT8_CALIBRATION_FIELDS`, checked by
        `configuration_acn.check_int8_calibration`), for this float trunk."""
        ranges = arrays["vision_int8_ranges"]
        if ranges is None:
            raise ValueError("an int8 calibration needs its vision_int8_ranges")
        calibration = cls.for_trunk(trunk, vision_backbone, len(ranges))
        with torch.no_grad():
            for name, value in calibration.values(arrays).items():
                getattr(calibration, name).copy_(value)
        return calibration

    def values(self, arrays: Mapping[str, list | None] | None = None) -> dict[str, torch.Tensor]:
        """Each buffer's value from these arrays (`INT8_CALIBRATION_FIELDS`, lists per conv; a VGG-16 calibration
        without scales or corrections gets 1 and 0: the same trunk), or the placeholders when `arrays` is None."""
        values = {name: torch.zeros_like(buffer) for name, buffer in self.named_buffers()}
        if "channel_scales" in values:
            values["channel_scales"] += 1
        if arrays is None:
            return values
        ranges = torch.tensor(arrays["vision_int8_ranges"], dtype=torch.float32).reshape(-1, 2)  # (points, 2)
        if len(ranges) != len(self.ranges):
            raise ValueError(f"vision_int8_ranges has {len(ranges)} ranges, the calibration has {len(self.ranges)}")
        values["ranges"] = ranges
        for name, field, channels, which in (
            ("channel_scales", "vision_int8_channel_scales", (self.conv_channels or [])[:-1], "conv but the last"),
            ("bias_corrections", "vision_int8_bias_corrections", self.conv_channels or [], "conv"),
        ):
            layers = arrays.get(field)
            if layers is None:
                continue
            if self.conv_channels is None:
                raise ValueError(f"{field} belongs to the VGG-16 int8 calibration; this trunk has none")
            if [len(layer) for layer in layers] != channels:
                raise ValueError(
                    f"{field} must give one value per output channel of each VGG-16 {which}, "
                    f"got lengths {[len(layer) for layer in layers]}"
                )
            values[name] = torch.tensor([value for layer in layers for value in layer], dtype=torch.float32)
        return values

    def arrays(self) -> dict[str, list | None]:
        """The calibration as the lists `INT8_CALIBRATION_FIELDS` names (what `from_arrays` reads): VGG-16's scales
        and corrections per conv, None for ResNet-152."""
        per_conv = self.per_conv()
        return {
            "vision_int8_ranges": self.ranges.float().cpu().tolist(),
            "vision_int8_channel_scales": None if per_conv is None else [layer.tolist() for layer in per_conv[0]],
            "vision_int8_bias_corrections": None if per_conv is None else [layer.tolist() for layer in per_conv[1]],
        }

    def per_conv(self) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]] | None:
        """VGG-16's (scales, corrections) split per conv, on the CPU in float32; None for ResNet-152."""
        if self.conv_channels is None:
            return None
        scales = self.channel_scales.float().cpu().split(self.conv_channels[:-1])  # (out_channels,) per conv
        corrections = self.bias_corrections.float().cpu().split(self.conv_channels)  # (out_channels,) per conv
        return scales, corrections

    def float_trunk(self, trunk: nn.Module) -> nn.Module:
        """The float trunk that int8 quantises: for VGG-16, a copy equalised by the scales, the corrections taken off
        its biases (see `INT8_EQUALISATION_EXPONENT`); ResNet-152's trunk itself."""
        per_conv = self.per_conv()
        return trunk if per_conv is None else _int8_float_trunk(trunk, *per_conv)


def calibration_key(calibration: AcnInt8Calibration | None) -> tuple[bytes, ...] | None:
    """The calibration's values as bytes: hashable and compared by value (32 KB for VGG-16)."""
    if calibration is None:
        return None
    return tuple(buffer.detach().float().cpu().numpy().tobytes() for buffer in calibration.buffers())


@torch.no_grad()
def int8_calibration(
    trunk: nn.Module, vision_backbone: str, chunks: Sequence[torch.Tensor]
) -> dict[str, list | None] | None:
    """The arrays (`INT8_CALIBRATION_FIELDS`) that quantise `trunk` from these batches of pixel values
    `(batch, 3, 224, 224)`, channels-last on the CPU; None for CLIP, which needs no calibration."""
    if vision_backbone == "clip-vit-b32":
        return None
    calibrate = _vgg16_calibration if vision_backbone == "vgg16" else _histogram_calibration
    return calibrate(trunk, chunks)


def quantize_trunk(
    trunk: nn.Module, vision_backbone: str, calibration: AcnInt8Calibration | None, example: torch.Tensor
) -> nn.Module:
    """The int8 copy of the frozen float `trunk` that the calibration describes (None for CLIP, which is quantised
    dynamically); `example` `(1, 3, 224, 224)` traces the CNN trunks."""
    torch.backends.quantized.engine = INT8_ENGINE
    if vision_backbone == "clip-vit-b32":
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(trunk).eval(), {nn.Linear})
    assert calibration is not None, "a CNN trunk is quantised from its calibration"
    return _convert_int8(calibration.float_trunk(trunk), example, calibration.ranges.float().cpu())


def _int8_qconfig_mapping(activation_observer: type[ObserverBase]) -> QConfigMapping:
    """Per-channel symmetric int8 weights; activations on a 7-bit grid (reduce_range) on every CPU: AVX2 CPUs without
    VNNI multiply-add pairs of 8-bit values into saturating 16-bit sums (with an 8-bit [0, max] grid, 15% VGG-16
    feature deviation there). The grid is stored in 8 bits, and VGG-16's calibration puts its largest values on levels
    above 127 (up to 255): pairs of two such values times large weights can still saturate on AVX2; measured harmless
    on the demo pictures (2.2-3.5% deviation with AVX2 kernels), not measured with trained weights."""
    activation = activation_observer.with_args(dtype=torch.quint8, reduce_range=True)
    weight = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    return QConfigMapping().set_global(QConfig(activation=activation, weight=weight))


def _prepare_int8(backbone: nn.Module, example: torch.Tensor, activation_observer: type[ObserverBase]) -> GraphModule:
    """An observed copy of the backbone (conv, batch norm and ReLU fused) in torch.ao's FX graph mode."""
    from torch.ao.quantization.quantize_fx import prepare_fx

    torch.backends.quantized.engine = INT8_ENGINE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao marks FX quantisation deprecated in favour of the torchao package
        return prepare_fx(
            copy.deepcopy(backbone).eval(), _int8_qconfig_mapping(activation_observer), example_inputs=(example,)
        )


def _observers(prepared: nn.Module) -> list[ObserverBase]:
    """The activation observers of a prepared backbone, in graph order."""
    return [module for module in prepared.modules() if isinstance(module, ObserverBase)]


def _conv_channels(trunk: nn.Module) -> list[int]:
    """The output channels of each conv of a VGG-16 trunk, in order."""
    return [layer.out_channels for layer in trunk.children() if isinstance(layer, nn.Conv2d)]


def _histogram_calibration(trunk: nn.Module, chunks: Sequence[torch.Tensor]) -> dict[str, list | None]:
    """ResNet-152's int8 calibration: per quantisation point, the range torch's `HistogramObserver` picks."""
    prepared = _prepare_int8(trunk, chunks[0][:1], HistogramObserver)
    for chunk in chunks:
        prepared(chunk)
    ranges = [_quantisation_range(observer) for observer in _observers(prepared)]
    return {"vision_int8_ranges": ranges, "vision_int8_channel_scales": None, "vision_int8_bias_corrections": None}


def _vgg16_calibration(trunk: nn.Module, chunks: Sequence[torch.Tensor]) -> dict[str, list | None]:
    """VGG-16's int8 calibration (see INT8_EQUALISATION_EXPONENT): the equalisation scales, the ranges of the
    equalised trunk and the bias corrections of its rounded weights."""
    input_means, output_maxima = _vgg16_channel_statistics(trunk, chunks)
    scales = _equalisation_scales(output_maxima)
    equalised = _int8_float_trunk(trunk, scales, None)
    prepared = _prepare_int8(equalised, chunks[0][:1], MinMaxObserver)
    for chunk in chunks:
        prepared(chunk)
    ranges = [_range_with_largest_on_level(observer) for observer in _observers(prepared)]
    corrections = _bias_corrections(equalised, _convert_int8(equalised, chunks[0][:1], ranges), input_means, scales)
    return {
        "vision_int8_ranges": ranges,
        "vision_int8_channel_scales": [layer.tolist() for layer in scales],
        "vision_int8_bias_corrections": [layer.tolist() for layer in corrections],
    }


def _range_with_largest_on_level(observer: MinMaxObserver) -> list[float]:
    """VGG-16's range for one quantisation point, from the [min, max] its `MinMaxObserver` saw: a signed activation
    keeps it; a non-negative one gets `[0, max * 127 / INT8_LARGEST_LEVEL]`, whose 7-bit grid puts max on that level
    of the 8-bit storage."""
    low, high = observer.min_val.item(), observer.max_val.item()
    return [low, high] if low < 0 else [0.0, high * 127 / INT8_LARGEST_LEVEL]


def _quantisation_range(observer: ObserverBase) -> list[float]:
    """The [min, max] an observer quantises over: its 7-bit grid, which a `MinMaxObserver` that sees these two
    values rebuilds."""
    scale, zero_point = (value.item() for value in observer.calculate_qparams())
    return [(observer.quant_min - zero_point) * scale, (observer.quant_max - zero_point) * scale]


def _vgg16_channel_statistics(
    trunk: nn.Module, chunks: Sequence[torch.Tensor]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per VGG-16 conv, on the calibration images: the mean of each input channel `(in_channels,)` and the largest
    value of each output channel after ReLU `(out_channels,)`."""
    convs = [layer for layer in trunk.children() if isinstance(layer, nn.Conv2d)]
    input_sums = [torch.zeros(conv.in_channels) for conv in convs]
    output_maxima = [torch.zeros(conv.out_channels) for conv in convs]  # ReLU outputs are >= 0
    positions = [0] * len(convs)  # pixels summed per input channel
    for chunk in chunks:
        hidden, index = chunk, 0  # (batch, 3, 224, 224)
        for layer in trunk.children():
            if isinstance(layer, nn.Conv2d):
                input_sums[index] += hidden.sum(dim=(0, 2, 3))  # (in_channels,)
                positions[index] += hidden.shape[0] * hidden.shape[2] * hidden.shape[3]
            hidden = layer(hidden)
            if isinstance(layer, nn.ReLU):
                largest = hidden.amax(dim=(0, 2, 3))  # (out_channels,)
                output_maxima[index] = torch.maximum(output_maxima[index], largest)
                index += 1
    return [sums / count for sums, count in zip(input_sums, positions, strict=True)], output_maxima


def _equalisation_scales(output_maxima: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per VGG-16 conv but the last (the last conv's channels are the features), per output channel c:
    `(m_c / max m) ** INT8_EQUALISATION_EXPONENT`, with m_c the channel's largest value after ReLU on the calibration
    images."""
    tiny = torch.finfo(torch.float32).tiny
    ratios = [
        (largest / largest.max().clamp(min=tiny)).clamp(min=INT8_SMALLEST_RATIO) for largest in output_maxima[:-1]
    ]  # (out_channels,) per conv
    return [ratio**INT8_EQUALISATION_EXPONENT for ratio in ratios]


def _bias_corrections(
    equalised: nn.Module, int8_trunk: nn.Module, input_means: list[torch.Tensor], scales: list[torch.Tensor]
) -> list[torch.Tensor]:
    """Per VGG-16 conv, per output channel: the mean shift `sum(ΔW) · E[x]` that rounding its (equalised) weights to
    int8 causes, ΔW the rounded weights less the float ones and E[x] the mean of each input channel on the
    calibration images (divided by the previous conv's scales, as the equalised trunk sees them)."""
    float_convs = [layer for layer in equalised.children() if isinstance(layer, nn.Conv2d)]
    int8_convs = [module for module in int8_trunk.modules() if isinstance(module, torch.ao.nn.quantized.Conv2d)]
    divisors = [torch.ones_like(input_means[0]), *scales]  # (in_channels,) per conv: the input is not rescaled
    corrections = []
    for float_conv, int8_conv, mean, divisor in zip(float_convs, int8_convs, input_means, divisors, strict=True):
        rounding = int8_conv.weight().dequantize() - float_conv.weight  # (out_channels, in_channels, 3, 3): ΔW
        corrections.append(rounding.sum(dim=(2, 3)) @ (mean / divisor))  # (out_channels,)
    return corrections


def _int8_float_trunk(
    trunk: nn.Module, scales: Sequence[torch.Tensor], bias_corrections: Sequence[torch.Tensor] | None
) -> nn.Module:
    """The float VGG-16 trunk that int8 quantises: a copy with each conv's output channels divided by its `scales`
    and the next conv's input channels multiplied by them (the same function: ReLU and max pooling commute with
    positive scales), then `bias_corrections` taken off the biases (None: none)."""
    trunk = copy.deepcopy(trunk)
    convs = [layer for layer in trunk.children() if isinstance(layer, nn.Conv2d)]
    with torch.no_grad():
        for conv, following, scale in zip(convs[:-1], convs[1:], scales, strict=True):
            assert conv.bias is not None  # VGG-16's convs have biases
            scale = scale.to(conv.weight.dtype)  # (out_channels,)
            conv.weight = nn.Parameter(conv.weight / scale[:, None, None, None], requires_grad=False)
            conv.bias = nn.Parameter(conv.bias / scale, requires_grad=False)
            following.weight = nn.Parameter(following.weight * scale[None, :, None, None], requires_grad=False)
        for conv, correction in zip(convs, bias_corrections or [], strict=bias_corrections is not None):
            assert conv.bias is not None
            conv.bias = nn.Parameter(conv.bias - correction.to(conv.bias.dtype), requires_grad=False)
    return trunk


def _convert_int8(backbone: nn.Module, example: torch.Tensor, ranges: torch.Tensor | list[list[float]]) -> nn.Module:
    """The int8 backbone whose activation observers saw exactly `ranges` `(points, 2)`: the same model on every
    rebuild."""
    from torch.ao.quantization.quantize_fx import convert_fx

    prepared = _prepare_int8(backbone, example, MinMaxObserver)
    observers = _observers(prepared)
    if len(observers) != len(ranges):
        raise ValueError(
            f"vision_int8_ranges has {len(ranges)} ranges, the backbone has {len(observers)} quantisation points"
        )
    for observer, low_high in zip(observers, torch.as_tensor(ranges, dtype=torch.float32), strict=True):
        observer(low_high)  # (2,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_fx(prepared)


__all__ = [
    "INT8_ENGINE",
    "AcnInt8Calibration",
    "calibration_key",
    "int8_available",
    "int8_calibration",
    "is_int8_calibrated",
    "quantize_trunk",
]
