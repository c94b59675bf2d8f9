"""int8 quantisation of ACN's frozen vision trunk on x86 CPUs, through torch.ao (oneDNN / FBGEMM kernels).

The model never depends on this file for its function: `AcnModel.get_image_features` asks for an int8 copy of the
trunk when `vision_precision` resolves to int8 (`vision_acn.AcnDerivedTrunks`), and `AcnModel.calibrate_vision` stores
what `int8_calibration` returns in the config (`INT8_CALIBRATION_FIELDS`), from which the same int8 trunk is rebuilt on
every load. How the calibration was chosen, and the deviation it gives, is in docs/int8.md.

- CLIP ViT-B/32: dynamic quantisation of its linear layers (activation ranges taken per batch; no calibration).
- VGG-16: activation equalisation, ranges with the largest value on level `INT8_LARGEST_LEVEL` of a 7-bit grid, and
  bias correction of the weights' rounding (see `INT8_EQUALISATION_EXPONENT`).
- ResNet-152: per quantisation point, the range torch's `HistogramObserver` picks.
"""

import copy
import warnings

import torch
from torch import nn
from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver, ObserverBase, PerChannelMinMaxObserver

from .configuration_acn import INT8_CALIBRATION_FIELDS

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
INT8_SCALE_DIGITS = 4  # significant digits of the stored scales and bias corrections (config.json stays small)
INT8_SMALLEST_RATIO = 1e-4  # m_c / max m of a channel that stayed 0 on the calibration images (no zero scale)


def int8_available() -> bool:
    """Whether this torch build has the x86 int8 kernels."""
    return INT8_ENGINE in torch.backends.quantized.supported_engines


def is_int8_calibrated(config) -> bool:
    """Whether the config holds what the int8 trunk is rebuilt from (CLIP needs nothing: dynamic quantisation)."""
    return config.vision_backbone == "clip-vit-b32" or config.vision_int8_ranges is not None


def calibration_key(config) -> tuple:
    """The config's calibration as nested tuples: hashable and compared by value, 0.2 ms a call (json.dumps of a
    VGG-16 calibration took 3 ms a call)."""
    return tuple(_as_tuples(getattr(config, name)) for name in INT8_CALIBRATION_FIELDS)


@torch.no_grad()
def int8_calibration(trunk: nn.Module, vision_backbone: str, chunks) -> dict | None:
    """The config fields (`INT8_CALIBRATION_FIELDS`) that quantise `trunk` from these batches of pixel values
    `(batch, 3, 224, 224)`, channels-last on the CPU; None for CLIP, which needs no calibration."""
    if vision_backbone == "clip-vit-b32":
        return None
    calibrate = _vgg16_calibration if vision_backbone == "vgg16" else _histogram_calibration
    return calibrate(trunk, chunks)


def quantize_trunk(trunk: nn.Module, config, example: torch.FloatTensor) -> nn.Module:
    """The int8 copy of the frozen float `trunk` that the config's calibration describes; `example` `(1, 3, 224, 224)`
    traces the CNN trunks."""
    torch.backends.quantized.engine = INT8_ENGINE
    if config.vision_backbone == "clip-vit-b32":
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(trunk).eval(), {nn.Linear})
    equalised = _int8_float_trunk(trunk, config.vision_int8_channel_scales, config.vision_int8_bias_corrections)
    return _convert_int8(equalised, example, config.vision_int8_ranges)


def _int8_qconfig_mapping(activation_observer):
    """Per-channel symmetric int8 weights; activations on a 7-bit grid (reduce_range) on every CPU: AVX2 CPUs without
    VNNI multiply-add pairs of 8-bit values into saturating 16-bit sums (with an 8-bit [0, max] grid, 15% VGG-16
    feature deviation there). The grid is stored in 8 bits, and VGG-16's calibration puts its largest values on levels
    above 127 (up to 255): pairs of two such values times large weights can still saturate on AVX2; measured harmless
    on the demo pictures (2.2-3.5% deviation with AVX2 kernels), not measured with trained weights."""
    from torch.ao.quantization import QConfig, QConfigMapping

    activation = activation_observer.with_args(dtype=torch.quint8, reduce_range=True)
    weight = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    return QConfigMapping().set_global(QConfig(activation=activation, weight=weight))


def _prepare_int8(backbone, example, activation_observer):
    """An observed copy of the backbone (conv, batch norm and ReLU fused) in torch.ao's FX graph mode."""
    from torch.ao.quantization.quantize_fx import prepare_fx

    torch.backends.quantized.engine = INT8_ENGINE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao marks FX quantisation deprecated in favour of the torchao package
        return prepare_fx(
            copy.deepcopy(backbone).eval(), _int8_qconfig_mapping(activation_observer), example_inputs=(example,)
        )


def _observers(prepared):
    """The activation observers of a prepared backbone, in graph order."""
    return [module for module in prepared.modules() if isinstance(module, ObserverBase)]


def _as_tuples(layers):
    """A calibration field (None, or a list of lists of numbers) as nested tuples: hashable, compared by value."""
    return None if layers is None else tuple(map(tuple, layers))


def _histogram_calibration(trunk, chunks) -> dict:
    """ResNet-152's int8 calibration: per quantisation point, the range torch's `HistogramObserver` picks."""
    prepared = _prepare_int8(trunk, chunks[0][:1], HistogramObserver)
    for chunk in chunks:
        prepared(chunk)
    ranges = [_quantisation_range(observer) for observer in _observers(prepared)]
    return {"vision_int8_ranges": ranges, "vision_int8_channel_scales": None, "vision_int8_bias_corrections": None}


def _vgg16_calibration(trunk, chunks) -> dict:
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
        "vision_int8_channel_scales": scales,
        "vision_int8_bias_corrections": corrections,
    }


def _range_with_largest_on_level(observer) -> list[float]:
    """VGG-16's range for one quantisation point, from the [min, max] its `MinMaxObserver` saw: a signed activation
    keeps it; a non-negative one gets `[0, max * 127 / INT8_LARGEST_LEVEL]`, whose 7-bit grid puts max on that level
    of the 8-bit storage."""
    low, high = observer.min_val.item(), observer.max_val.item()
    return [low, high] if low < 0 else [0.0, high * 127 / INT8_LARGEST_LEVEL]


def _quantisation_range(observer) -> list[float]:
    """The [min, max] an observer quantises over: its 7-bit grid, which a `MinMaxObserver` that sees these two
    values rebuilds."""
    scale, zero_point = (value.item() for value in observer.calculate_qparams())
    return [(observer.quant_min - zero_point) * scale, (observer.quant_max - zero_point) * scale]


def _vgg16_channel_statistics(trunk, chunks):
    """Per VGG-16 conv, on the calibration images: the mean of each input channel `(in_channels,)` and the largest
    value of each output channel after ReLU `(out_channels,)`."""
    convs = [layer for layer in trunk if isinstance(layer, nn.Conv2d)]
    input_sums = [torch.zeros(conv.in_channels) for conv in convs]
    output_maxima = [torch.zeros(conv.out_channels) for conv in convs]  # ReLU outputs are >= 0
    positions = [0] * len(convs)  # pixels summed per input channel
    for chunk in chunks:
        hidden, index = chunk, 0  # (batch, 3, 224, 224)
        for layer in trunk:
            if isinstance(layer, nn.Conv2d):
                input_sums[index] += hidden.sum(dim=(0, 2, 3))  # (in_channels,)
                positions[index] += hidden.shape[0] * hidden.shape[2] * hidden.shape[3]
            hidden = layer(hidden)
            if isinstance(layer, nn.ReLU):
                output_maxima[index] = torch.maximum(
                    output_maxima[index], hidden.amax(dim=(0, 2, 3))
                )  # (out_channels,)
                index += 1
    return [sums / count for sums, count in zip(input_sums, positions)], output_maxima


def _equalisation_scales(output_maxima) -> list[list[float]]:
    """Per VGG-16 conv but the last, per output channel c: `(m_c / max m) ** INT8_EQUALISATION_EXPONENT`, with m_c
    the channel's largest value after ReLU on the calibration images (4 significant digits)."""
    tiny = torch.finfo(torch.float32).tiny
    ratios = [
        (largest / largest.max().clamp(min=tiny)).clamp(min=INT8_SMALLEST_RATIO) for largest in output_maxima[:-1]
    ]
    return [
        _rounded(ratio**INT8_EQUALISATION_EXPONENT) for ratio in ratios
    ]  # the last conv's channels are the features


def _bias_corrections(equalised, int8_trunk, input_means, scales) -> list[list[float]]:
    """Per VGG-16 conv, per output channel: the mean shift `sum(ΔW) · E[x]` that rounding its (equalised) weights to
    int8 causes, ΔW the rounded weights less the float ones and E[x] the mean of each input channel on the
    calibration images (divided by the previous conv's scales, as the equalised trunk sees them)."""
    float_convs = [layer for layer in equalised if isinstance(layer, nn.Conv2d)]
    int8_convs = [module for module in int8_trunk.modules() if isinstance(module, torch.ao.nn.quantized.Conv2d)]
    divisors = [torch.ones_like(input_means[0])] + [
        torch.tensor(scale) for scale in scales
    ]  # the input is not rescaled
    corrections = []
    for float_conv, int8_conv, mean, divisor in zip(float_convs, int8_convs, input_means, divisors, strict=True):
        rounding = int8_conv.weight().dequantize() - float_conv.weight  # (out_channels, in_channels, 3, 3): ΔW
        corrections.append(_rounded(rounding.sum(dim=(2, 3)) @ (mean / divisor)))  # (out_channels,)
    return corrections


def _rounded(values: torch.Tensor) -> list[float]:
    return [float(f"{value:.{INT8_SCALE_DIGITS}g}") for value in values.tolist()]


def _int8_float_trunk(trunk, scales, bias_corrections):
    """The float VGG-16 trunk that int8 quantises: a copy with each conv's output channels divided by its `scales`
    and the next conv's input channels multiplied by them (the same function: ReLU and max pooling commute with
    positive scales), then `bias_corrections` taken off the biases. The trunk itself when both are None."""
    if scales is None and bias_corrections is None:
        return trunk
    convs = [layer for layer in trunk if isinstance(layer, nn.Conv2d)]
    _check_per_channel(
        "vision_int8_channel_scales",
        scales,
        [conv.out_channels for conv in convs[:-1]],
        "each VGG-16 conv but the last",
    )
    _check_per_channel(
        "vision_int8_bias_corrections", bias_corrections, [conv.out_channels for conv in convs], "each VGG-16 conv"
    )
    trunk = copy.deepcopy(trunk)
    convs = [layer for layer in trunk if isinstance(layer, nn.Conv2d)]
    with torch.no_grad():
        for conv, following, scale in zip(convs, convs[1:], scales or []):
            scale = torch.tensor(scale, dtype=conv.weight.dtype)  # (out_channels,)
            conv.weight = nn.Parameter(conv.weight / scale[:, None, None, None], requires_grad=False)
            conv.bias = nn.Parameter(conv.bias / scale, requires_grad=False)
            following.weight = nn.Parameter(following.weight * scale[None, :, None, None], requires_grad=False)
        for conv, correction in zip(convs, bias_corrections or []):
            conv.bias = nn.Parameter(conv.bias - torch.tensor(correction, dtype=conv.bias.dtype), requires_grad=False)
    return trunk


def _check_per_channel(name, values, channels, which):
    if values is not None and [len(layer) for layer in values] != channels:
        raise ValueError(
            f"{name} must give one value per output channel of {which}, got lengths {[len(layer) for layer in values]}"
        )


def _convert_int8(backbone, example, ranges):
    """The int8 backbone whose activation observers saw exactly `ranges`: the same model on every rebuild."""
    from torch.ao.quantization.quantize_fx import convert_fx

    prepared = _prepare_int8(backbone, example, MinMaxObserver)
    observers = _observers(prepared)
    if len(observers) != len(ranges):
        raise ValueError(
            f"vision_int8_ranges has {len(ranges)} ranges, the backbone has {len(observers)} quantisation points"
        )
    for observer, (low, high) in zip(observers, ranges):
        observer(torch.tensor([low, high]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_fx(prepared)


__all__ = [
    "INT8_ENGINE",
    "calibration_key",
    "int8_available",
    "int8_calibration",
    "is_int8_calibrated",
    "quantize_trunk",
]
