"""Issue 38's A/B of the per-call work outside the graph: an older commit's `modeling_acn` against this checkout's, on
the same exported folder, interleaved in one process, one thread, in CPU time (process time).

    mkdir -p /tmp/before && git archive COMMIT modeling_acn | tar -x -C /tmp/before
    OMP_NUM_THREADS=1 python benchmarks/onnx_overhead_ab.py /tmp/before/modeling_acn outputs/acn-onnx [--rounds 5]

The older package loads as `modeling_acn_before` (its imports are relative).

Prints whether both tag every Twitter-2015 test tweet alike (and the largest score difference), the CPU ms per
tweet at batch 1 (96 one-tweet calls) and batch 32 (256 tweets, calls of 32), and the decoding and marginals steps
alone per call (the logits of 96 calls of `--step_batch` tweets, each step 5 times per round).
"""

import argparse
import functools
import importlib
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnxruntime
import torch

from acn_mner.corpus import read_split_file

TWITTER2015_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "twitter2015" / "test.txt"


def load_package(name: str, folder: Path) -> None:
    """Import the package in `folder` under `name`."""
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    assert spec is not None and spec.loader is not None, f"{folder} holds no package"
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def load(package: str, folder: Path) -> Any:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    pipeline = importlib.import_module(f"{package}.pipeline_acn")
    model = importlib.import_module(f"{package}.onnx_runtime_acn").AcnOnnxModel(folder, "model_int8.onnx", options)
    return pipeline.AcnPipeline(model=model, processor=pipeline.load_processor(folder), device="cpu")


def interleaved(runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for turn in range(rounds):
        for name in list(runs) if turn % 2 == 0 else list(runs)[::-1]:
            started = time.process_time()
            runs[name]()
            seconds[name].append(time.process_time() - started)
    return {name: statistics.median(times) for name, times in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path, help="an older commit's modeling_acn folder")
    parser.add_argument("folder", type=Path, help="an acn-export --int8 folder")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--step_batch", type=int, default=1, help="tweets per call for the steps alone")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_package("modeling_acn_before", args.before)
    pipes = {"before": load("modeling_acn_before", args.folder), "after": load("modeling_acn", args.folder)}
    texts = [" ".join(tweet.tokens) for tweet in read_split_file(TWITTER2015_TEST)]
    outputs = {name: pipe(texts, batch_size=32, return_tags=True) for name, pipe in pipes.items()}
    pairs = list(zip(outputs["before"], outputs["after"], strict=True))
    same = all(old["tags"] == new["tags"] for old, new in pairs)
    gap = max(abs(x - y) for old, new in pairs for x, y in zip(old["scores"], new["scores"], strict=True))
    print(f"{len(texts)} test tweets: tags identical {same}, largest score difference {gap:.1e}")
    for batch, count in ((1, 96), (32, 256)):
        sample = texts[:count]

        def run(pipe: Any, batch: int = batch, sample: list[str] = sample) -> None:
            for start in range(0, len(sample), batch):
                pipe(sample[start] if batch == 1 else sample[start : start + batch], batch_size=batch)

        medians = interleaved({name: functools.partial(run, pipe) for name, pipe in pipes.items()}, args.rounds)
        old, new = (1e3 * medians[name] / count for name in ("before", "after"))
        print(f"batch {batch}: before {old:.2f} CPU ms per tweet, after {new:.2f}, {old / new:.3f}x")
    captured: list[tuple[torch.Tensor, torch.Tensor | None]] = []  # each one-tweet call's logits and word mask
    model = pipes["after"].model
    decode = model.decode

    def capture(logits: torch.Tensor, mask: torch.Tensor | None = None, constrain_bio: bool = False) -> object:
        captured.append((logits, mask))
        return decode(logits, mask, constrain_bio)

    model.decode = capture
    for start in range(0, 96 * args.step_batch, args.step_batch):
        chunk = texts[start : start + args.step_batch]
        pipes["after"](chunk[0] if args.step_batch == 1 else chunk, batch_size=args.step_batch)
    model.decode = decode
    for step in ("decode", "marginals"):

        def steps(name: str, step: str = step) -> Callable[[], object]:
            pipe = pipes[name]
            marginals = sys.modules[f"{type(pipe).__module__}"].tag_marginals
            one: Callable[[Any, Any], object] = (
                (lambda logits, mask: pipe.model.decode(logits, mask, constrain_bio=True))
                if step == "decode"
                else (lambda logits, mask: marginals(pipe.model, logits, mask))
            )
            return lambda: [one(logits, mask) for _ in range(5) for logits, mask in captured]

        medians = interleaved({name: steps(name) for name in pipes}, 2 * args.rounds + 1)
        old, new = (1e3 * medians[name] / (5 * len(captured)) for name in ("before", "after"))
        print(f"{step} per call of {args.step_batch}: before {old:.3f} CPU ms, after {new:.3f}, {old / new:.2f}x")


if __name__ == "__main__":
    main()
