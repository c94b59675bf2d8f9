"""What benchmarks/ share (`acn_mner.benchmarking`): tag agreement against a hand count, the Markdown table's exact
text, timing with a fake clock, and the JSON report."""

import json
import os

import numpy as np
import pytest
import torch

from acn_mner import benchmarking
from acn_mner.benchmarking import (
    agreement,
    format_value,
    markdown_table,
    matmul_gflops,
    thread_environment,
    timed,
    write_json,
)


def test_agreement_is_the_share_of_words_with_the_reference_tag():
    tags = [["B-PER", "O"], ["O", "O", "B-LOC"], ["I-ORG"]]
    reference = [["B-PER", "I-PER"], ["O", "O", "B-LOC"], ["B-ORG"]]
    # by hand: tweet 0 agrees on 1 of 2 words, tweet 1 on 3 of 3, tweet 2 on 0 of 1
    assert agreement(tags, reference) == pytest.approx(4 / 6)
    assert agreement(reference, reference) == 1.0


def test_agreement_refuses_taggings_of_other_tweets():
    with pytest.raises(ValueError, match="1 tweets against 2 in the reference"):
        agreement([["O"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="tweet 1 has 1 tags against 2 in the reference"):
        agreement([["O"], ["O"]], [["O"], ["O", "O"]])
    with pytest.raises(ValueError, match="no words to compare"):
        agreement([], [])


def test_the_table_of_a_tiny_input():
    rows = {
        "eager": {"tweets/s": 12.3456, "ok": True},
        "onnx": {"tweets/s": "7.0 (0.57x)", "note": "a|b"},
        "skipped": "no onnxruntime",
    }
    assert markdown_table(rows, name_header="pipeline") == (
        "| pipeline | tweets/s | ok | note | value |\n"
        "|---|---|---|---|---|\n"
        "| eager | 12.3 | True |  |  |\n"
        "| onnx | 7.0 (0.57x) |  | a\\|b |  |\n"
        "| skipped |  |  |  | no onnxruntime |"
    )


def test_the_table_takes_chosen_columns_and_headers():
    rows = {1: {"a": 0.5, "b": None, "c": 3}}
    assert (
        markdown_table(rows, columns=["c", "a"], headers=["C", "A"]) == "|  | C | A |\n|---|---|---|\n| 1 | 3 | 0.5 |"
    )
    with pytest.raises(ValueError, match="1 headers for 2 columns"):
        markdown_table(rows, columns=["c", "a"], headers=["C"])


def test_print_table_prints_a_heading_then_the_table(capsys):
    benchmarking.print_table("Speed", {"row": {"x": 1}}, name_header="name")
    assert capsys.readouterr().out == "\n## Speed\n| name | x |\n|---|---|\n| row | 1 |\n"


def test_format_value():
    assert format_value(None) == ""
    assert format_value(0.123456) == "0.123"
    assert format_value(1234567.0) == "1.23e+06"
    assert format_value({"ours": 1.0 / 3, "nested": {"speedup": 2.0}}) == "{ours=0.333, nested={speedup=2}}"
    assert format_value([1, 2]) == "[1, 2]"


def test_timed_returns_the_median_run_after_the_warmup(monkeypatch):
    clock = iter([0.0, 5.0, 10.0, 11.0, 20.0, 23.0])  # runs of 5, 1 and 3 seconds
    monkeypatch.setattr(benchmarking.time, "perf_counter", lambda: next(clock))
    calls = []
    assert timed(calls.append, "x", repeats=3, warmup=2) == 3.0
    assert calls == ["x"] * 5


def test_timed_binds_each_iterations_own_arguments():
    """What a lambda in a loop gets wrong when it runs after its iteration: here every call sees its own value."""
    seen = []
    for value in range(3):
        timed(seen.append, value, repeats=2, warmup=1)
    assert seen == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="repeats must be at least 1, got 0"):
        timed(seen.append, 0, repeats=0)


def test_thread_environment_sets_every_runtimes_threads_and_keeps_the_isa_limits(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    environment = thread_environment(3)
    assert environment["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ORT_INTRA_OP_NUM_THREADS"):
        assert environment[name] == "3"
    assert os.environ["OMP_NUM_THREADS"] == "8"  # this process's environment is left as it was
    with pytest.raises(ValueError, match="threads must be at least 1, got 0"):
        thread_environment(0)


def test_matmul_gflops_is_a_positive_rate():
    assert matmul_gflops(size=16, repeats=1) > 0


def test_write_json_makes_the_folder_and_writes_numpy_and_tensor_numbers_as_floats(tmp_path):
    path = tmp_path / "new" / "report.json"
    write_json(path, {"rate": np.float32(1.5), "loss": torch.tensor(0.25), "rows": [1, "a"]})
    assert json.loads(path.read_text(encoding="utf-8")) == {"rate": 1.5, "loss": 0.25, "rows": [1, "a"]}
    assert path.read_text(encoding="utf-8").endswith("}\n")
