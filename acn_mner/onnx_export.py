"""ONNX export of a saved ACN model, for `AcnPipeline.from_pretrained(folder, backend="onnxruntime")`.

    acn-export --model outputs/acn --output_dir outputs/acn-onnx --format onnx [--int8 [--calibration_images DIR]]

Writes `model.onnx` (float32, input to logits, dynamic batch and lengths) through `torch.onnx.export(...,
dynamo=True)` (torch.export, then ONNX); with `--int8` also `model_int8.onnx`, ONNX Runtime's dynamic quantisation
of it (int8 weights of the matrix products, activations quantised per call): the text encoder and the head. A model
with images also gets `vision.onnx`, its image trunk (pixels to region features) in float32, and with `--int8
--calibration_images DIR` also `vision_int8.onnx`, ONNX Runtime's static quantisation of it (QDQ: int8 weights per
output channel, uint8 activations whose ranges come from the trunk's run on the folder's images). Beside them
`onnx_config.json` (the CRF's scores and how the graphs were made) and the model folder's config, tokenizer,
processor and code files, so that the folder is self-contained. Each graph is checked against the eager model on an
example batch before the folder is written.
"""

import argparse
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from modeling_acn import AcnConfig, AcnForTokenClassification, AcnProcessor
from modeling_acn.onnx_runtime_acn import (
    IMAGE_FEATURES,
    LOGITS,
    ONNX_CONFIG_FILE,
    ONNX_FILE,
    ONNX_INT8_FILE,
    PIXEL_VALUES,
    TRUNK_ID_KEY,
    VISION_ONNX_FILE,
    VISION_ONNX_INT8_FILE,
    import_onnxruntime,
    onnx_min_char_width,
)
from modeling_acn.torch_export_acn import BILSTM
from modeling_acn.vision_acn import BACKBONE_INPUT_SIZE, backbone_regions

from .atomic import atomic_folder
from .command_line import ArgumentParser, existing_folder, one_line_errors
from .output_check import refuse_overwriting_inputs

if TYPE_CHECKING:
    import onnx

EXPORTER = "torch.onnx.export(dynamo=True)"
ENCODER_PREFIX = "encoder/"  # of the encoder graph's node, value and weight names in the joined graph
SUBWORD_STATES = "subword_states"  # the pretrained encoder's last hidden states, where its graph joins the rest
NAME_SCOPES = "pkg.torch.onnx.name_scopes"  # the module path of each node, as the dynamo exporter records it
FEED_FORWARD_OUTPUT = re.compile(r"subword_encoder\.encoder\.layer\.\d+\.output\.dense'")  # BERT-style FFN out
# the same products in the encoder's TorchScript graph (`export_encoder_graph`), found by their node names
FEED_FORWARD_OUTPUT_NODE = re.compile(r"encoder/layer\.\d+/output/dense/MatMul$")
QUANTIZED_OPERATORS = ["MatMul", "Gemm", "Attention"]  # Attention: the fused encoder's query-key-value projection
FORMATS = ("onnx",)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx")  # not copied: the graphs hold the weights
SUBWORD_TOKENIZER_FOLDER = "subword_tokenizer"  # AcnTokenizer.save_pretrained writes the encoder's tokenizer there
EXAMPLE_LENGTHS = (3, 2)  # words of the example tweets; two sizes, so that export sees no size of 0 or 1
CHECK_TOLERANCE = 1e-4  # largest |logit| difference from eager that a written graph may show on the example


def export_onnx(
    model_folder_or_model: str | os.PathLike | AcnForTokenClassification,
    output_dir: str | os.PathLike,
    int8: bool = False,
    processor: AcnProcessor | None = None,
    calibration_pixels: torch.Tensor | None = None,
) -> Path:
    """Export an ACN model to ONNX in `output_dir` (see the module docstring); returns `output_dir`.

    Args:
        model_folder_or_model: a saved model folder (its config, tokenizer and processor files are copied), or an
            `AcnForTokenClassification` (then pass `processor` to save it beside the graphs).
        output_dir: a new or empty folder, or an earlier export (replaced as a whole); not the model folder.
        int8: also write `model_int8.onnx`.
        processor: an `AcnProcessor` to save beside the graphs (for a model given as an object).
        calibration_pixels: with `int8` and a model with images, `(images, 3, 224, 224)` preprocessed pixels that
            calibrate `vision_int8.onnx` (static int8); without them no int8 trunk is written.
    """
    if calibration_pixels is not None and not int8:
        raise ValueError("calibration images calibrate the int8 image trunk: they go with int8=True (--int8)")
    source = None if isinstance(model_folder_or_model, nn.Module) else Path(model_folder_or_model)
    output_dir = Path(output_dir)
    _check_output_dir(output_dir, source)
    model = _load(model_folder_or_model)
    if model.config.word_pooling == "lstm":
        raise ValueError(
            "word_pooling='lstm' cannot be exported (each word's subword count sets its LSTM's length): export a model "
            "with 'first' or 'mean' pooling"
        )
    inputs = example_inputs(model.config)
    with atomic_folder(output_dir) as folder:
        export_logits_graph(model, inputs, folder / ONNX_FILE)
        if model.config.use_image:
            export_vision_graph(model, folder / VISION_ONNX_FILE)
        if int8:
            quantize_int8(folder / ONNX_FILE, folder / ONNX_INT8_FILE)
        vision_int8_pixels = calibration_pixels if int8 and model.config.use_image else None
        if vision_int8_pixels is not None:
            quantize_vision_int8(folder / VISION_ONNX_FILE, folder / VISION_ONNX_INT8_FILE, vision_int8_pixels)
        config = onnx_config(model, int8)
        config["graphs"] += [VISION_ONNX_INT8_FILE] if vision_int8_pixels is not None else []
        (folder / ONNX_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if source is not None:
            copy_folder_files(source, folder)
        else:
            model.config.save_pretrained(folder)
        if processor is not None:
            processor.save_pretrained(folder)
    return output_dir


def example_inputs(config: AcnConfig) -> dict[str, torch.Tensor]:
    """A batch of two random tweets with every input the graph takes, at sizes export can generalise from."""
    generator = torch.Generator().manual_seed(0)
    batch, seq_len = len(EXAMPLE_LENGTHS), max(EXAMPLE_LENGTHS)
    attention_mask = (
        torch.arange(seq_len)[None, :] < torch.tensor(EXAMPLE_LENGTHS)[:, None]
    ).long()  # (batch, seq_len)
    inputs = {
        "input_ids": torch.randint(1, config.vocab_size, (batch, seq_len), generator=generator) * attention_mask,
        "attention_mask": attention_mask,
    }
    if config.use_char_cnn:
        width = onnx_min_char_width(config) + 1
        inputs["char_ids"] = torch.randint(1, config.char_vocab_size, (batch, seq_len, width), generator=generator)
    if config.text_config is not None:  # a pretrained encoder: [start] one subword per word [end], then padding
        subword_to_word = torch.tensor([[0, 1, 2, 3, 0], [0, 1, 2, 0, 0]])  # (batch, subwords)
        special = torch.tensor([[1, 0, 0, 0, 1], [1, 0, 0, 1, 0]])  # (batch, subwords)
        inputs["subword_attention_mask"] = ((subword_to_word > 0) | (special > 0)).long()
        ids = torch.randint(1000, config.text_config.vocab_size, subword_to_word.shape, generator=generator)
        inputs["subword_ids"] = ids * inputs["subword_attention_mask"]
        inputs["subword_to_word"] = subword_to_word
    if config.use_image:
        inputs["image_features"] = torch.rand(
            batch, config.num_image_regions, config.image_feature_dim, generator=generator
        )
        inputs["image_mask"] = torch.tensor([True, False])  # both paths: co-attention and text only
    return inputs


def dynamic_shapes(config: AcnConfig, inputs: dict[str, torch.Tensor]) -> dict[str, dict[int, torch.export.Dim]]:
    """`torch.export` dimensions of each input: batch, words, characters per word and subwords per tweet vary.

    Characters start at the widest char-CNN kernel plus one (`onnx_min_char_width`) and subwords at 3 (a word and
    the two special tokens); subwords end at `text_encoder_window`, the longest tweet the encoder reads in one call
    (the torch model reads longer ones as pieces, a branch on the length that one graph cannot hold).
    """
    batch = torch.export.Dim("batch", min=1)
    words = torch.export.Dim("words", min=1)
    axes = {"input_ids": {0: batch, 1: words}, "attention_mask": {0: batch, 1: words}}
    if "char_ids" in inputs:
        axes["char_ids"] = {0: batch, 1: words, 2: torch.export.Dim("characters", min=onnx_min_char_width(config))}
    if "subword_ids" in inputs:
        subwords = torch.export.Dim("subwords", min=3, max=config.text_encoder_window)
        for name in ("subword_ids", "subword_attention_mask", "subword_to_word"):
            axes[name] = {0: batch, 1: subwords}
    if "image_features" in inputs:
        axes["image_features"] = {0: batch}
        axes["image_mask"] = {0: batch}
    return {name: axes[name] for name in inputs}


class AcnLogits(nn.Module):
    """The model's `logits` alone, the graph's one output. Its inputs are named: under `**inputs`, torch.export's
    shape guards on them name paths that the ONNX exporter's decomposition step cannot find (torch 2.14)."""

    def __init__(self, model: AcnForTokenClassification) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        char_ids: torch.Tensor | None = None,
        subword_ids: torch.Tensor | None = None,
        subword_attention_mask: torch.Tensor | None = None,
        subword_to_word: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.model(
            input_ids,
            char_ids=char_ids,
            attention_mask=attention_mask,
            image_features=image_features,
            image_mask=image_mask,
            subword_ids=subword_ids,
            subword_attention_mask=subword_attention_mask,
            subword_to_word=subword_to_word,
        ).logits  # (batch, seq_len, num_labels)


class AcnVisionTrunk(nn.Module):
    """The model's image trunk in float32: pixels `(images, 3, 224, 224)` to regions `(images, 49, feature_dim)`."""

    def __init__(self, model: AcnForTokenClassification) -> None:
        super().__init__()
        if model.acn.vision is None:
            raise ValueError("this model has no vision trunk (use_image=False)")
        self.vision = model.acn.vision
        self.backbone = model.config.vision_backbone

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return backbone_regions(self.vision, self.backbone, pixel_values).float()


def export_logits_graph(model: AcnForTokenClassification, inputs: dict[str, torch.Tensor], path: Path) -> None:
    """`model.onnx`: inputs to logits, checked against eager on `inputs`. With a pretrained encoder the graph is two
    exports joined: the encoder (`export_encoder_graph`: the TorchScript exporter, then ONNX Runtime's transformer
    optimiser, so that its attention, residual layer norms and GELUs run as fused kernels) and the rest
    (`torch.export`, taking the encoder's states as an input), joined into one graph on `subword_states`."""
    if model.acn.text_encoder.subword_encoder is None:
        export_head_graph(model, inputs, path)
    else:
        with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
            encoder_path, head_path = Path(scratch) / "encoder.onnx", Path(scratch) / "head.onnx"
            head = export_head_graph(model, inputs, head_path, with_states=True)
            opset = next(entry.version for entry in head.opset_import if entry.domain in ("", "ai.onnx"))
            export_encoder_graph(model, encoder_path, opset)
            import onnx

            onnx.save(join_graphs(onnx.load(str(encoder_path)), head), str(path))
    with torch.no_grad():
        expected = model(**inputs).logits
    check_graph(path, inputs, expected, LOGITS)


def export_head_graph(
    model: AcnForTokenClassification, inputs: dict[str, torch.Tensor], path: Path, with_states: bool = False
) -> "onnx.ModelProto":
    """`torch.export` then ONNX of the model (inputs to logits); `with_states`: the pretrained encoder's last hidden
    states come in as the input `subword_states` (batch, subwords, hidden) instead of being computed."""
    module: nn.Module = AcnLogitsFromStates(model) if with_states else AcnLogits(model)
    kwargs, shapes = dict(inputs), dynamic_shapes(model.config, inputs)
    if with_states:
        with torch.no_grad():
            kwargs[SUBWORD_STATES] = AcnSubwordEncoder(model)(
                inputs["subword_ids"], inputs["subword_attention_mask"]
            )  # (batch, subwords, hidden)
        shapes[SUBWORD_STATES] = shapes["subword_ids"]
    with eager_attention(model), warnings.catch_warnings():
        # torch.onnx warns that an axis name "will not be used" for every axis named by one Dim shared by several inputs
        warnings.filterwarnings("ignore", message="# The axis name: .* will not be used")
        program = torch.onnx.export(
            module.eval(),
            args=(),
            kwargs=kwargs,
            dynamic_shapes=shapes,
            dynamo=True,
            output_names=[LOGITS],
            external_data=False,
            verbose=False,
            custom_translation_table={BILSTM: bilstm_as_onnx_lstm},
        )
    assert program is not None  # dynamo=True returns the program (the stubs allow the legacy exporter's None)
    program.save(str(path))
    return program.model_proto


class AcnLogitsFromStates(AcnLogits):
    """`AcnLogits` with the pretrained encoder's last hidden states as an input: the graph of everything after the
    encoder, which `join_graphs` joins to the encoder's own graph."""

    def forward(  # type: ignore[override]
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        subword_states: torch.Tensor,
        char_ids: torch.Tensor | None = None,
        subword_ids: torch.Tensor | None = None,
        subword_attention_mask: torch.Tensor | None = None,
        subword_to_word: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        text_encoder = self.model.acn.text_encoder
        text_encoder._subword_states = lambda *_: subword_states  # type: ignore[method-assign]  # shadows the method
        try:
            return super().forward(
                input_ids,
                attention_mask,
                char_ids,
                subword_ids,
                subword_attention_mask,
                subword_to_word,
                image_features,
                image_mask,
            )  # (batch, seq_len, num_labels)
        finally:
            del text_encoder._subword_states


class AcnSubwordEncoder(nn.Module):
    """The pretrained encoder alone: subword ids and mask to its last hidden states."""

    def __init__(self, model: AcnForTokenClassification) -> None:
        super().__init__()
        encoder = model.acn.text_encoder.subword_encoder
        assert encoder is not None  # export_logits_graph exports it only with a pretrained encoder
        self.encoder: nn.Module = encoder
        self.config = encoder.config

    def forward(self, subword_ids: torch.Tensor, subword_attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(
            input_ids=subword_ids, attention_mask=subword_attention_mask
        ).last_hidden_state  # (batch, subwords, hidden)


def export_encoder_graph(model: AcnForTokenClassification, path: Path, opset: int) -> dict[str, int]:
    """The pretrained encoder through the TorchScript exporter (whose BERT graph ONNX Runtime's transformer optimiser
    recognises: the dynamo exporter's does not fuse its attention), then that optimiser: fused attention, embedding
    and residual layer norms, bias-GELU. Returns the optimiser's count of each fused operator."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    encoder = AcnSubwordEncoder(model).eval()
    ids = torch.tensor([[101, 2000, 2001, 102, 0], [101, 2002, 102, 0, 0]]) % encoder.config.vocab_size
    mask = (torch.arange(5)[None, :] < torch.tensor([4, 3])[:, None]).long()  # (batch, subwords)
    axes = {0: "batch", 1: "subwords"}
    raw = path.with_suffix(".raw.onnx")
    with eager_attention(model), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(
            encoder,
            (ids, mask),
            str(raw),
            input_names=["subword_ids", "subword_attention_mask"],
            output_names=[SUBWORD_STATES],
            dynamic_axes={"subword_ids": axes, "subword_attention_mask": axes, SUBWORD_STATES: axes},
            opset_version=opset,
            dynamo=False,
        )
    text_config = encoder.config
    fusions = FusionOptions("bert")
    fusions.enable_skip_layer_norm = False  # slower than Add and LayerNormalization apart (docs/serving.md)
    optimized = optimize_model(
        str(raw),
        model_type="bert",
        num_heads=text_config.num_attention_heads,
        hidden_size=text_config.hidden_size,
        optimization_options=fusions,
        opt_level=0,  # the optimiser's fusions only; ONNX Runtime applies its own as the session loads
    )
    optimized.save_model_to_file(str(path))
    return dict(optimized.get_fused_operator_statistics())


def join_graphs(encoder: "onnx.ModelProto", head: "onnx.ModelProto") -> "onnx.ModelProto":
    """One graph: the encoder's nodes (their names, values and weights prefixed `encoder/`), then the head's, which read
    the encoder's output `subword_states` in place of their own input; inputs shared by name (`subword_ids`,
    `subword_attention_mask`), the head's output."""
    import onnx
    from onnx import compose, helper

    encoder = compose.add_prefix(encoder, ENCODER_PREFIX, rename_inputs=False, rename_outputs=False)
    inputs = [value for value in head.graph.input if value.name != SUBWORD_STATES]
    inputs += [value for value in encoder.graph.input if value.name not in {value.name for value in inputs}]
    graph = helper.make_graph(
        list(encoder.graph.node) + list(head.graph.node),
        head.graph.name,
        inputs,
        list(head.graph.output),
        initializer=list(encoder.graph.initializer) + list(head.graph.initializer),
        value_info=list(encoder.graph.value_info) + list(head.graph.value_info),
    )
    opsets: dict[str, int] = {}
    for entry in list(encoder.opset_import) + list(head.opset_import):
        domain = "" if entry.domain == "ai.onnx" else entry.domain
        opsets[domain] = max(opsets.get(domain, 0), entry.version)
    joined = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(domain, version) for domain, version in opsets.items()],
        ir_version=max(encoder.ir_version, head.ir_version),
        functions=list(head.functions) + list(encoder.functions),
    )
    joined.metadata_props.extend(head.metadata_props)
    onnx.checker.check_model(joined)
    return joined


def bilstm_as_onnx_lstm(
    words: Any,
    lengths: Any,
    weight_ih: Any,
    weight_hh: Any,
    bias_ih: Any,
    bias_hh: Any,
    weight_ih_reverse: Any,
    weight_hh_reverse: Any,
    bias_ih_reverse: Any,
    bias_hh_reverse: Any,
) -> Any:
    """`torch.ops.acn.bilstm` (`modeling_acn.torch_export_acn.bilstm_for_export`) as ONNX's `LSTM` operator, one
    node for both directions, `sequence_lens` the tweets' lengths (the backward direction starts at each tweet's last
    word, and ONNX Runtime leaves the padding steps 0). nn.LSTM stacks its gates i, f, g, o; ONNX's order is i, o, f,
    c (g), so the weight and bias rows are regrouped (constants, folded as the graph is written)."""
    from onnxscript import opset20  # import on use: onnxscript comes with the [onnx] extra

    op: Any = opset20  # its stubs type inputs as tensors; the exporter passes values and Python constants alike

    hidden = weight_hh.shape[1]
    gate = [list(range(start * hidden, (start + 1) * hidden)) for start in range(4)]  # rows of i, f, g, o
    onnx_order = gate[0] + gate[3] + gate[1] + gate[2]  # i, o, f, g

    def onnx_gates(rows: Any) -> Any:  # (4 * hidden, ...) in nn.LSTM's order -> ONNX's
        return op.Gather(rows, onnx_order, axis=0)

    def directions(forward: Any, backward: Any) -> Any:  # (2, ...): forward, then backward
        return op.Concat(op.Unsqueeze(forward, [0]), op.Unsqueeze(backward, [0]), axis=0)

    weights = directions(onnx_gates(weight_ih), onnx_gates(weight_ih_reverse))  # (2, 4 * hidden, input)
    recurrence = directions(onnx_gates(weight_hh), onnx_gates(weight_hh_reverse))  # (2, 4 * hidden, hidden)
    biases = directions(
        op.Concat(onnx_gates(bias_ih), onnx_gates(bias_hh), axis=0),
        op.Concat(onnx_gates(bias_ih_reverse), onnx_gates(bias_hh_reverse), axis=0),
    )  # (2, 8 * hidden)
    steps = op.Transpose(words, perm=[1, 0, 2])  # (seq_len, batch, input)
    outputs, _, _ = op.LSTM(
        steps,
        weights,
        recurrence,
        biases,
        op.Cast(lengths, to=onnx_int32()),
        direction="bidirectional",
        hidden_size=hidden,
    )  # (seq_len, 2, batch, hidden)
    return op.Reshape(op.Transpose(outputs, perm=[2, 0, 1, 3]), [0, 0, -1])  # (batch, seq_len, 2 * hidden)


def onnx_int32() -> int:
    import onnx

    return int(onnx.TensorProto.INT32)


@contextmanager
def eager_attention(model: AcnForTokenClassification) -> Iterator[None]:
    """The pretrained text encoder with transformers' "eager" attention while it is exported: the same function as
    SDPA, whose exported form adds NaN guards for fully masked rows (Where, IsNaN); in ONNX Runtime the eager graph
    ran MiniLM-L6's ACN about 10% faster at batch 32 (float32 and int8)."""
    encoder = model.acn.text_encoder.subword_encoder
    if encoder is None:
        yield
        return
    previous = encoder.config._attn_implementation
    encoder.set_attn_implementation("eager")
    try:
        yield
    finally:
        encoder.set_attn_implementation(previous)


def export_vision_graph(model: AcnForTokenClassification, path: Path) -> None:
    """`vision.onnx`: pixels to region features (float32, any number of images), checked against eager; its
    metadata_props record the trunk's `vision_trunk_id()` (the int8 quantisation keeps them)."""
    trunk = AcnVisionTrunk(model).eval()
    pixel_values = torch.randn(
        2, 3, BACKBONE_INPUT_SIZE, BACKBONE_INPUT_SIZE, generator=torch.Generator().manual_seed(0)
    )
    program = torch.onnx.export(
        trunk,
        (pixel_values,),
        dynamic_shapes=({0: torch.export.Dim("images", min=1)},),
        dynamo=True,
        input_names=[PIXEL_VALUES],
        output_names=[IMAGE_FEATURES],
        external_data=False,
        verbose=False,
    )
    assert program is not None  # as in export_logits_graph
    program.model.metadata_props[TRUNK_ID_KEY] = model.vision_trunk_id()
    program.save(str(path))
    with torch.no_grad():
        expected = trunk(pixel_values)
    check_graph(path, {PIXEL_VALUES: pixel_values}, expected, IMAGE_FEATURES)


def quantize_int8(
    fp32_path: Path, int8_path: Path, float32_nodes: Iterable[str] | None = None, per_channel: bool = True
) -> None:
    """ONNX Runtime's dynamic quantisation: int8 weights for the matrix products (MatMul, Gemm, and the fused
    encoder's query-key-value projection in `Attention`), activations quantised per call from their range;
    everything else stays float32, and so do the products named by `float32_nodes` (default: `float32_products`'s).
    `per_channel` (the default): one weight scale per output column instead of one per matrix. (The quantiser advises
    running `quant_pre_process` first; its symbolic shape inference stops at the graph's data-dependent sizes.)"""
    import_onnxruntime()
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if float32_nodes is None:
        float32_nodes = float32_products(onnx.load(str(fp32_path), load_external_data=False).graph)
    quantize_dynamic(
        fp32_path,
        int8_path,
        op_types_to_quantize=QUANTIZED_OPERATORS,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(float32_nodes),
        per_channel=per_channel,
        # the fused encoder's operators (com.microsoft) have no ONNX shape inference: their outputs are float32
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


CALIBRATION_BATCH = 8  # images per calibration run of the trunk


def quantize_vision_int8(fp32_path: Path, int8_path: Path, calibration_pixels: torch.Tensor) -> None:
    """ONNX Runtime's static quantisation of the image trunk: QDQ, int8 weights with one scale per output channel on
    a 7-bit grid (reduce_range), uint8 activations whose ranges (min-max) come from running the float32 trunk on
    `calibration_pixels` `(images, 3, 224, 224)`. The 7-bit weights keep AVX2 CPUs without VNNI, which add pairs of
    uint8 x int8 products in saturating 16-bit sums, from saturating (255 x 64 x 2 < 2^15); docs/serving.md
    gives the error with either grid."""
    import_onnxruntime()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    pixels = torch.as_tensor(calibration_pixels, dtype=torch.float32)
    if (
        pixels.ndim != 4
        or pixels.shape[0] == 0
        or tuple(pixels.shape[1:]) != (3, BACKBONE_INPUT_SIZE, BACKBONE_INPUT_SIZE)
    ):
        raise ValueError(
            f"calibration pixels must be (images >= 1, 3, {BACKBONE_INPUT_SIZE}, {BACKBONE_INPUT_SIZE}), got "
            f"{tuple(pixels.shape)}"
        )

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(pixels.split(CALIBRATION_BATCH))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {PIXEL_VALUES: batch.numpy()}

    quantize_static(
        fp32_path,
        int8_path,
        Batches(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=True,
    )


def calibration_pixels(model_folder: Path, image_dir: Path) -> torch.Tensor:
    """The images (.jpg, .jpeg, .png) of `image_dir`, read as every path reads them and preprocessed by the model
    folder's image processor: `(images, 3, 224, 224)`."""
    from modeling_acn import AcnImageProcessor
    from modeling_acn.image_processing_acn import load_image_file, upright_rgb

    files = sorted(path for path in image_dir.iterdir() if path.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise ValueError(f"--calibration_images {str(image_dir)!r} holds no .jpg, .jpeg or .png file")
    pictures = [upright_rgb(load_image_file(path)[0]) for path in files]
    return AcnImageProcessor.from_pretrained(model_folder)(images=pictures, return_tensors="pt")["pixel_values"]


def product_scopes(graph: "onnx.GraphProto") -> dict[str, str]:
    """Each matrix product's node name and the module scope the exporter recorded on it (`model.acn....dense`)."""
    return {
        node.name: next((entry.value for entry in node.metadata_props if entry.key == NAME_SCOPES), "")
        for node in graph.node
        if node.op_type in ("MatMul", "Gemm")
    }


def float32_products(graph: "onnx.GraphProto") -> list[str]:
    """The matrix products that stay float32 in `acn-export --int8`'s graph: those whose weight is a vector (one
    output: a per-channel scale needs a matrix). Every other product is int8 with per-channel weights, chosen on
    Twitter-2015 dev with trained MiniLM-L6 models among other choices (the encoder's feed-forward outputs in
    float32, per-tensor weights, the head in float32: `benchmarks/onnx_quality.py --int8_variants`, figures in
    docs/serving.md)."""
    vectors = {tensor.name for tensor in graph.initializer if len(tensor.dims) < 2}
    return [
        node.name
        for node in graph.node
        if node.op_type in ("MatMul", "Gemm") and any(name in vectors for name in node.input)
    ]


def feed_forward_outputs(graph: "onnx.GraphProto") -> list[str]:
    """A pretrained encoder's feed-forward output projections (`layer.N.output.dense`, 4h to h), which read GELU
    outputs: float32 in the int8 graphs of earlier exports, and a variant of `benchmarks/onnx_quality.py`. Found by
    the module scope the dynamo exporter records on a node, or by the node's name in the encoder's TorchScript graph."""
    return [
        name
        for name, scopes in product_scopes(graph).items()
        if FEED_FORWARD_OUTPUT.search(scopes) or FEED_FORWARD_OUTPUT_NODE.search(name)
    ]


def check_graph(path: Path, inputs: dict[str, torch.Tensor], expected: torch.Tensor, output: str) -> None:
    """Run the written graph in ONNX Runtime on `inputs`; raise when its output strays from eager's."""
    onnxruntime = import_onnxruntime()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run([output], {name: tensor.numpy() for name, tensor in inputs.items()})
    difference = float(np.abs(got - expected.numpy()).max())
    if not difference <= CHECK_TOLERANCE:
        raise RuntimeError(
            f"{path.name} gives {output} up to {difference:.2e} away from the eager model's (tolerance "
            f"{CHECK_TOLERANCE})"
        )


def onnx_config(model: AcnForTokenClassification, int8: bool) -> dict[str, Any]:
    """`onnx_config.json`: what `AcnOnnxModel` needs beside the graphs (the CRF's scores) and how they were made."""
    crf = None
    if model.crf is not None:
        crf = {
            name: getattr(model.crf, name).detach().float().tolist()
            for name in ("start_transitions", "end_transitions", "transitions")
        }
    return {
        "exporter": EXPORTER,
        "torch_version": torch.__version__,
        "graphs": [ONNX_FILE]
        + ([ONNX_INT8_FILE] if int8 else [])
        + ([VISION_ONNX_FILE] if model.config.use_image else []),
        "vision_trunk_id": model.vision_trunk_id() if model.config.use_image else None,
        "crf": crf,
    }


def copy_folder_files(source: Path, folder: Path) -> None:
    """The model folder's config, tokenizer, processor, code and card files, and the subword tokenizer's folder;
    not its weights, nor other folders (checkpoints, logs)."""
    for path in sorted(source.iterdir()):
        if path.is_file() and not path.name.endswith(WEIGHT_SUFFIXES):
            shutil.copy2(path, folder / path.name)
    if (source / SUBWORD_TOKENIZER_FOLDER).is_dir():
        shutil.copytree(source / SUBWORD_TOKENIZER_FOLDER, folder / SUBWORD_TOKENIZER_FOLDER)


def _load(model_folder_or_model: str | os.PathLike | nn.Module) -> AcnForTokenClassification:
    if isinstance(model_folder_or_model, nn.Module):
        model = model_folder_or_model
        if not isinstance(model, AcnForTokenClassification):
            raise TypeError(f"export_onnx exports an AcnForTokenClassification, got {type(model).__name__}")
    else:
        model = AcnForTokenClassification.from_pretrained(model_folder_or_model)
    if model.dtype != torch.float32:
        raise ValueError(f"export_onnx writes a float32 graph: load the model in float32, got {model.dtype}")
    return model.eval().cpu()


def _check_output_dir(output_dir: Path, source: Path | None) -> None:
    refuse_overwriting_inputs(output_dir, [("model folder", source)], flag="--output_dir", folder=True)
    if output_dir.is_dir() and any(output_dir.iterdir()) and not (output_dir / ONNX_CONFIG_FILE).is_file():
        raise ValueError(
            f"--output_dir {output_dir} holds files that are not an ACN ONNX export: choose a new or empty folder"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(prog="acn-export", description="Export a saved ACN model to ONNX.")
    parser.add_argument("--model", required=True, help="The saved model folder (model, config and processor files).")
    parser.add_argument("--output_dir", required=True, help="Where to write the graphs and the model's other files.")
    parser.add_argument("--format", default="onnx", choices=FORMATS, help="The export format (ONNX only).")
    parser.add_argument("--int8", action="store_true", help="Also write model_int8.onnx (dynamic int8 quantisation).")
    parser.add_argument(
        "--calibration_images",
        type=existing_folder,
        help=(
            "With --int8, a model with images: a folder of images (e.g. some training images) that calibrate "
            "vision_int8.onnx, the image trunk in static int8."
        ),
    )
    args = parser.parse_args(argv)
    if args.calibration_images is not None and not args.int8:
        parser.error("--calibration_images calibrates the int8 image trunk: give --int8 too")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not Path(args.model).is_dir():
        raise ValueError(f"--model {args.model} is not a folder")
    inputs = {"model folder": args.model, "--calibration_images folder": args.calibration_images}
    refuse_overwriting_inputs(args.output_dir, inputs.items(), flag="--output_dir", folder=True)
    pixels = None
    if args.calibration_images is not None:
        pixels = calibration_pixels(Path(args.model), args.calibration_images)
    output_dir = export_onnx(args.model, args.output_dir, int8=args.int8, calibration_pixels=pixels)
    print(f"wrote {', '.join(json.loads((output_dir / ONNX_CONFIG_FILE).read_text())['graphs'])} to {output_dir}")


cli = one_line_errors(main)  # the console command

__all__ = ["cli", "dynamic_shapes", "example_inputs", "export_onnx", "feed_forward_outputs", "float32_products", "main"]


if __name__ == "__main__":
    cli()
