"""The strongest cheap peer of ACN's int8 ONNX pipeline in benchmarks/serve.py: a plain token-classification model
(`AutoModelForTokenClassification` on the same encoder) exported to ONNX, fused by ONNX Runtime's transformer
optimiser, quantised to dynamic int8 (ONNX Runtime's recipe for BERT), and run as a serving engineer would run it:
the fast tokenizer once over a call's tweets, batches of tweets of similar subword length, the logits' argmax, and
each word tagged by its first subword.

This is benchmark code, not the product: ACN is compared with it, and it has no CRF, no characters and no images."""

import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.optimizer import optimize_model
from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

from modeling_acn.pipeline_acn import entity_spans

FLOAT_FILE = "model.onnx"  # torch.onnx.export's graph, unfused
OPTIMIZED_FILE = "model_optimized.onnx"  # fused by onnxruntime.transformers.optimizer
INT8_FILE = "model_int8.onnx"  # the optimised graph, dynamic int8
GRAPH_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
FUSIONS = ("EmbedLayerNormalization", "Attention", "SkipLayerNormalization")  # the fusions a BERT graph must show
STEPS = (
    "preprocess",
    "graph",
    "decode",
    "postprocess",
)  # what `OnnxTokenTagger.step_seconds` splits a call's time into


def export_token_classifier(model_dir: str | os.PathLike, output_dir: str | os.PathLike) -> dict[str, int]:
    """Export the `AutoModelForTokenClassification` saved in `model_dir` to `output_dir`: the float32 graph (TorchScript
    exporter, dynamic batch and sequence), the graph fused by ONNX Runtime's transformer optimiser (`model_type="bert"`
    with the model's heads and hidden size), that graph in dynamic int8 (int8 weights per tensor, uint8 activations),
    and the tokenizer. Returns the optimiser's count of each fused operator; a BERT graph without its
    `FUSIONS` is an error (the optimiser did not recognise the attention, so the peer would not be the fast one)."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    # Eager attention: the optimiser's attention fusion matches its pattern, not the one of torch's fused SDPA.
    model = AutoModelForTokenClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    example = tokenizer(["a short tweet", "RT @user : a longer tweet about Paris"], padding=True, return_tensors="pt")
    axes = {"batch": 0, "sequence": 1}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(
            model,
            tuple(example[name] for name in GRAPH_INPUTS),
            str(output / FLOAT_FILE),
            input_names=list(GRAPH_INPUTS),
            output_names=["logits"],
            dynamic_axes={name: {index: axis for axis, index in axes.items()} for name in [*GRAPH_INPUTS, "logits"]},
            opset_version=17,
            dynamo=False,
        )
    optimized = optimize_model(
        str(output / FLOAT_FILE),
        model_type="bert",
        num_heads=model.config.num_attention_heads,
        hidden_size=model.config.hidden_size,
    )
    fusions = {name: int(count) for name, count in optimized.get_fused_operator_statistics().items()}
    missing = [name for name in FUSIONS if not fusions.get(name)]
    if missing:
        raise ValueError(f"ONNX Runtime's optimiser fused no {', '.join(missing)} in {model_dir}: {fusions}")
    optimized.save_model_to_file(str(output / OPTIMIZED_FILE))
    quantize_dynamic(
        output / OPTIMIZED_FILE,
        output / INT8_FILE,
        weight_type=QuantType.QInt8,
        # the fused operators (Attention, SkipLayerNormalization) are outside ONNX's shape inference: their outputs
        # are float32
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    tokenizer.save_pretrained(output)
    AutoConfig.from_pretrained(model_dir).save_pretrained(output)
    return fusions


def save_token_classifier(encoder: str | os.PathLike, labels: Sequence[str], output_dir: str | os.PathLike) -> None:
    """`AutoModelForTokenClassification` on `encoder`'s weights with a seeded, untrained head of `labels`, and the
    encoder's tokenizer, saved in `output_dir` (the plain pipeline's model and the peer's source)."""
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(
        encoder, id2label=dict(enumerate(labels)), label2id={label: index for index, label in enumerate(labels)}
    )
    model.save_pretrained(output_dir)
    AutoTokenizer.from_pretrained(encoder).save_pretrained(output_dir)


class OnnxTokenTagger:
    """Tag tweets with an `export_token_classifier` folder in ONNX Runtime on the CPU.

    Args:
        folder: the folder `export_token_classifier` wrote.
        onnx_file: the graph to run, `INT8_FILE` (the peer) or `OPTIMIZED_FILE`/`FLOAT_FILE` (float32).
        threads: ONNX Runtime's intra-op threads.
        session_options: other `onnxruntime.SessionOptions` (e.g. profiling); `threads` is set on them.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        onnx_file: str = INT8_FILE,
        threads: int = 1,
        session_options: onnxruntime.SessionOptions | None = None,
    ) -> None:
        folder = Path(folder)
        options = session_options or onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(folder / onnx_file), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [graph_input.name for graph_input in self.session.get_inputs()]
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        config = AutoConfig.from_pretrained(folder)
        self.labels = [config.id2label[index] for index in range(len(config.id2label))]
        self.max_length = min(self.tokenizer.model_max_length, config.max_position_embeddings)
        self.step_seconds = dict.fromkeys(STEPS, 0.0)  # summed over every call

    def tags(self, texts: Sequence[str], batch_size: int = 32) -> list[list[str]]:
        """Each tweet's word tags (words split at whitespace): the argmax of the logits at the word's first
        subword; a word the encoder's window cuts off gets "O"."""
        mark = time.perf_counter()

        def step(name: str) -> None:  # the time since the last step's end goes to `name`
            nonlocal mark
            now = time.perf_counter()
            self.step_seconds[name] += now - mark
            mark = now

        words = [text.split() for text in texts]
        encodings = self.tokenizer(
            words, is_split_into_words=True, truncation=True, max_length=self.max_length, return_attention_mask=False
        ).encodings
        lengths = np.array([len(encoding.ids) for encoding in encodings])
        order = np.argsort(lengths, kind="stable")  # batches of similar lengths: little padding
        tags: list[list[str]] = [[] for _ in texts]
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            width = int(lengths[rows].max())
            input_ids = np.full((len(rows), width), self.tokenizer.pad_token_id, dtype=np.int64)  # (batch, width)
            attention_mask = np.zeros((len(rows), width), dtype=np.int64)  # (batch, width)
            for row, index in enumerate(rows):
                input_ids[row, : lengths[index]] = encodings[index].ids
                attention_mask[row, : lengths[index]] = 1
            feeds = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": attention_mask * 0}
            step("preprocess")
            (logits,) = self.session.run(
                ["logits"], {name: feeds[name] for name in self.input_names}
            )  # (batch, width, labels)
            step("graph")
            best = logits.argmax(-1)  # (batch, width)
            for row, index in enumerate(rows):
                word_tags = ["O"] * len(words[index])
                seen = set()
                for position, word in enumerate(encodings[index].word_ids):
                    if word is not None and word not in seen:  # the word's first subword
                        seen.add(word)
                        word_tags[word] = self.labels[best[row, position]]
                tags[index] = word_tags
            step("decode")
        return tags

    def __call__(self, texts: str | Sequence[str], batch_size: int = 32) -> Any:
        """Entities of one tweet, or of each of a list of tweets: `{"entity_group", "word", "start", "end"}` with
        the span's first and last word + 1, as a serving endpoint returns them."""
        single = isinstance(texts, str)
        batch = [texts] if isinstance(texts, str) else list(texts)
        results = []
        tags_of_batch = self.tags(batch, batch_size)
        started = time.perf_counter()
        for text, tags in zip(batch, tags_of_batch, strict=True):
            words = text.split()
            results.append(
                [
                    {"entity_group": kind, "word": " ".join(words[first : last + 1]), "start": first, "end": last + 1}
                    for kind, first, last in entity_spans(tags)
                ]
            )
        self.step_seconds["postprocess"] += time.perf_counter() - started
        return results[0] if single else results


__all__ = [
    "FLOAT_FILE",
    "FUSIONS",
    "INT8_FILE",
    "OPTIMIZED_FILE",
    "OnnxTokenTagger",
    "STEPS",
    "export_token_classifier",
    "save_token_classifier",
]
