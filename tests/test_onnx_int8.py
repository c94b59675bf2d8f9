"""The int8 ONNX graph's choice of float32 products: a pretrained encoder's feed-forward output projections stay
float32 (found from the exporter's module scopes), every other weight matrix is quantised."""

from importlib.util import find_spec

import numpy as np
import pytest

from acn_mner.onnx_export import export_onnx, float32_products
from modeling_acn import AcnPipeline
from modeling_acn.onnx_runtime_acn import ONNX_FILE, ONNX_INT8_FILE

from .encoder_fixtures import make_model, make_processor

pytestmark = pytest.mark.skipif(
    find_spec("onnxruntime") is None or find_spec("onnxscript") is None,
    reason="ONNX export and runtime need onnxruntime and onnxscript (pip install onnxruntime onnxscript)",
)
QUANTISED_PRODUCTS = {"MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}


def weight_shapes(graph) -> dict[str, tuple]:
    """Each matrix product's weight shape (its initializer input), by node name."""
    shapes = {tensor.name: tuple(tensor.dims) for tensor in graph.initializer}
    return {
        node.name: next((shapes[name] for name in node.input if name in shapes), None)
        for node in graph.node
        if node.op_type in ("MatMul", "Gemm")
    }


def test_int8_keeps_the_encoders_feed_forward_outputs_float32(tiny_bert, tmp_path):
    import onnx

    processor = make_processor(tiny_bert)
    model = make_model(tiny_bert, processor, use_image=False)
    AcnPipeline(model=model, processor=processor, device="cpu").save_pretrained(tmp_path / "model")
    export_onnx(tmp_path / "model", tmp_path / "onnx", int8=True)
    fp32 = onnx.load(str(tmp_path / "onnx" / ONNX_FILE)).graph
    encoder = model.acn.text_encoder.subword_encoder.config
    # brute force: the feed-forward output is the encoder's only intermediate_size -> hidden_size matrix
    # (stored (in, out) in the graph)
    down_projections = {
        name for name, shape in weight_shapes(fp32).items() if shape == (encoder.intermediate_size, encoder.hidden_size)
    }
    kept = float32_products(fp32)
    assert len(kept) == encoder.num_hidden_layers and set(kept) == down_projections

    int8 = onnx.load(str(tmp_path / "onnx" / ONNX_INT8_FILE)).graph
    plain = {node.name for node in int8.node if node.op_type in ("MatMul", "Gemm")}
    assert set(kept) <= plain  # still float32 products, under their names
    weights = {tensor.name: tensor for tensor in int8.initializer}
    float_matrices = [
        name
        for node in int8.node
        if node.op_type in ("MatMul", "Gemm") and node.name not in kept
        for name in node.input
        if name in weights
        and len(weights[name].dims) == 2
        and onnx.helper.tensor_dtype_to_np_dtype(weights[name].data_type) == np.float32
    ]
    assert float_matrices == []  # every other product with a weight matrix is quantised
    assert any(node.op_type in QUANTISED_PRODUCTS for node in int8.node)
