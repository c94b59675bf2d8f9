"""The exported graph as ONNX Runtime runs it fastest (issue 38): the BiLSTM as ONNX's `LSTM` operator, a pretrained
encoder with ONNX Runtime's fused attention, every weight matrix of the int8 graph quantised per channel; and folders
exported before (a Scan BiLSTM, one torch.export graph, the feed-forward outputs in float32) still load and run."""

import json
import shutil
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch

from acn_mner.onnx_export import export_onnx, feed_forward_outputs, float32_products
from modeling_acn import (
    AcnConfig,
    AcnForTokenClassification,
    AcnImageProcessor,
    AcnPipeline,
    AcnProcessor,
    AcnTokenizer,
)
from modeling_acn.onnx_runtime_acn import ONNX_FILE, ONNX_INT8_FILE, AcnOnnxModel

from .encoder_fixtures import make_model, make_processor
from .pipeline_fixtures import TRAIN

pytestmark = pytest.mark.skipif(
    find_spec("onnxruntime") is None or find_spec("onnxscript") is None,
    reason="ONNX export and runtime need onnxruntime and onnxscript (pip install onnxruntime onnxscript)",
)
FIXTURES = Path(__file__).parent / "fixtures"
OLD_EXPORT = "acn_tiny_onnx_scan"  # written by the exporter before issue 38 (make_fixture_onnx_scan.py.txt)
TWEETS = [
    "Obama visits Paris .",
    "Merkel meets @user in Berlin",
    "Paris visits Obama in Berlin http://t.co/x",
    "Berlin",
    "RT @CNN : Macron and Merkel meet in Brussels today #EU",
]
QUANTISED_PRODUCTS = {"MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention"}


def op_types(path: Path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path)).graph.node}


def onnx_logits(folder: Path, onnx_file: str, processor: AcnProcessor, tweets: list[str]) -> torch.Tensor:
    model = AcnOnnxModel(folder, onnx_file)
    return model(**processor(tweets, return_tensors="pt")).logits  # (tweets, words, labels)


def paper_model() -> tuple[AcnForTokenClassification, AcnProcessor]:
    """The paper's text model (character CNN, word vectors, BiLSTM, CRF), tiny and random."""
    torch.manual_seed(0)
    tokenizer = AcnTokenizer.from_corpus(TRAIN)
    config = AcnConfig(
        word_embedding_dim=8,
        char_embedding_dim=6,
        char_num_filters=4,
        hidden_size=16,
        attention_size=8,
        dropout=0.0,
        use_image=False,
        vocab_size=len(tokenizer),
        char_vocab_size=tokenizer.char_vocab_size,
        id2label=dict(enumerate(("O", "B-PER", "I-PER", "B-LOC", "I-LOC"))),
    )
    model = AcnForTokenClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(30)
    return model, AcnProcessor(AcnImageProcessor(), tokenizer)


def test_the_bilstm_is_onnxs_lstm_operator_and_computes_what_eager_does(tmp_path):
    model, processor = paper_model()
    exported = export_onnx(model, tmp_path / "onnx", processor=processor)
    types = op_types(exported / ONNX_FILE)
    assert "LSTM" in types and "Scan" not in types and "Loop" not in types
    # tweets of 1 to 9 words in one padded batch: the backward direction must start at each tweet's own last word
    with torch.no_grad():
        expected = model(**processor(TWEETS, return_tensors="pt")).logits  # (tweets, words, labels)
    got = onnx_logits(exported, ONNX_FILE, processor, TWEETS)
    mask = processor(TWEETS, return_tensors="pt")["attention_mask"].bool()
    torch.testing.assert_close(got[mask], expected[mask], rtol=0, atol=1e-4)
    eager = AcnPipeline(model=model, processor=processor, device="cpu")
    onnx = AcnPipeline.from_pretrained(exported, backend="onnxruntime")
    assert [row["tags"] for row in onnx(TWEETS, return_tags=True, batch_size=5)] == [
        row["tags"] for row in eager(TWEETS, return_tags=True, batch_size=5)
    ]


def short_tweets(processor: AcnProcessor) -> list[str]:
    """The tweets that fit the encoder's window (the graph refuses longer ones), of several lengths."""
    window = processor.tokenizer.subword_window
    return [tweet for tweet in TWEETS if len(processor([tweet])["subword_ids"][0]) <= window]


def test_a_pretrained_encoder_runs_fused_and_tags_as_eager(tiny_bert, tmp_path):
    processor = make_processor(tiny_bert)
    model = make_model(tiny_bert, processor, use_image=False, use_lstm=True)
    exported = export_onnx(model, tmp_path / "onnx", int8=True, processor=processor)
    tweets = short_tweets(processor)
    assert len({len(tweet.split()) for tweet in tweets}) >= 3
    types = op_types(exported / ONNX_FILE)
    # ONNX Runtime's transformer optimiser fused the encoder; the residual layer norms stay apart (faster)
    assert {"Attention", "EmbedLayerNormalization", "BiasGelu", "LSTM"} <= types
    assert not types & {"SkipLayerNormalization", "Scan", "Softmax"}
    with torch.no_grad():
        expected = model(**processor(tweets, return_tensors="pt")).logits  # (tweets, words, labels)
    got = onnx_logits(exported, ONNX_FILE, processor, tweets)
    mask = processor(tweets, return_tensors="pt")["attention_mask"].bool()
    torch.testing.assert_close(got[mask], expected[mask], rtol=0, atol=1e-4)
    eager = AcnPipeline(model=model, processor=processor, device="cpu")
    onnx = AcnPipeline.from_pretrained(exported, backend="onnxruntime")
    assert [row["tags"] for row in onnx(tweets, return_tags=True, batch_size=2)] == [
        row["tags"] for row in eager(tweets, return_tags=True, batch_size=2)
    ]
    int8 = AcnPipeline.from_pretrained(exported, backend="onnxruntime", onnx_file=ONNX_INT8_FILE)
    assert len(int8(tweets, return_tags=True, batch_size=2)) == len(tweets)


def test_int8_quantises_every_weight_matrix_per_channel(tiny_bert, tmp_path):
    import onnx

    processor = make_processor(tiny_bert)
    model = make_model(tiny_bert, processor, use_image=False, use_lstm=True)
    exported = export_onnx(model, tmp_path / "onnx", int8=True, processor=processor)
    fp32 = onnx.load(str(exported / ONNX_FILE)).graph
    shapes = {tensor.name: tuple(tensor.dims) for tensor in fp32.initializer}
    weights = {
        node.name: next((shapes[name] for name in node.input if name in shapes), None)
        for node in fp32.node
        if node.op_type in ("MatMul", "Gemm")
    }
    encoder = model.acn.text_encoder.subword_encoder.config
    # brute force: the feed-forward output is the encoder's only intermediate_size -> hidden_size matrix
    down = {name for name, shape in weights.items() if shape == (encoder.intermediate_size, encoder.hidden_size)}
    assert set(feed_forward_outputs(fp32)) == down and len(down) == encoder.num_hidden_layers
    assert set(float32_products(fp32)) == {name for name, shape in weights.items() if shape and len(shape) < 2}

    int8 = onnx.load(str(exported / ONNX_INT8_FILE)).graph
    types = {node.op_type for node in int8.node}
    assert "QAttention" in types and "Attention" not in types  # the fused query-key-value projection too
    float_weights = {
        tensor.name
        for tensor in int8.initializer
        if len(tensor.dims) == 2 and onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type) == np.float32
    }
    plain = [node.name for node in int8.node if node.op_type in ("MatMul", "Gemm") and set(node.input) & float_weights]
    assert plain == []
    scales = {tensor.name: tuple(tensor.dims) for tensor in int8.initializer if tensor.name.endswith("_scale")}
    assert any(len(shape) == 1 and shape[0] > 1 for shape in scales.values())  # one scale per output column


def test_a_folder_exported_before_issue_38_still_loads_and_runs(tmp_path):
    folder = shutil.copytree(FIXTURES / OLD_EXPORT, tmp_path / OLD_EXPORT)
    expected = json.loads((FIXTURES / f"{OLD_EXPORT}_expected.json").read_text())
    assert "Scan" in op_types(folder / ONNX_FILE)  # the old form of the BiLSTM
    pipe = AcnPipeline.from_pretrained(folder, backend="onnxruntime")
    assert [row["tags"] for row in pipe(expected["tweets"], return_tags=True)] == expected["tags"]
    processor = pipe.processor
    mask = processor(expected["tweets"], return_tensors="pt")["attention_mask"].bool()
    got = onnx_logits(folder, ONNX_FILE, processor, expected["tweets"])
    torch.testing.assert_close(got[mask], torch.tensor(expected["logits"])[mask], rtol=0, atol=1e-4)
    int8 = AcnPipeline.from_pretrained(folder, backend="onnxruntime", onnx_file=ONNX_INT8_FILE)
    assert [len(row["tags"]) for row in int8(expected["tweets"], return_tags=True)] == [
        len(tags) for tags in expected["tags"]
    ]


def test_acn_predict_runs_the_int8_graph_with_workers_on_a_file(tmp_path):
    from acn_mner import predict

    model, processor = paper_model()
    exported = export_onnx(model, tmp_path / "onnx", int8=True, processor=processor)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": TWEETS[index % len(TWEETS)]}) + "\n" for index in range(40)))
    outputs = {}
    for workers in ("0", "2"):
        output = tmp_path / f"out{workers}.jsonl"
        predict.main(
            [
                "--model",
                str(exported),
                "--backend",
                "onnxruntime",
                "--onnx_file",
                ONNX_INT8_FILE,
                "--input",
                str(rows),
                "--output",
                str(output),
                "--batch_size",
                "8",
                "--num_workers",
                workers,
            ]
        )
        outputs[workers] = [json.loads(line)["tags"] for line in output.read_text().splitlines()]
    assert len(outputs["2"]) == 40 and outputs["2"] == outputs["0"]
    pipe = AcnPipeline.from_pretrained(exported, backend="onnxruntime", onnx_file=ONNX_INT8_FILE)
    assert outputs["0"][: len(TWEETS)] == [row["tags"] for row in pipe(TWEETS, return_tags=True, batch_size=8)]
