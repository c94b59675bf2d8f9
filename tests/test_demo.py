"""examples/run_demo.py end to end on a small corpus, its output going to pipes (as `make demo > log` does): no
progress bars, each results table once, and demo_results.json with the attention share and the occlusion effect."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the demo with a small corpus and one epoch per model: its steps and printing, not its scores
SMALL_DEMO = """
import functools, runpy, sys
from acn_mner import demo_corpus

demo_corpus.write_demo_corpus = functools.partial(
    demo_corpus.write_demo_corpus, num_train=24, num_valid=8, num_test=8
)
demo = runpy.run_path(sys.argv[1])
training = list(demo["DEMO_TRAINING"])
training[training.index("--num_train_epochs") + 1] = "1"
demo["DEMO_TRAINING"][:] = training
demo["main"](["--output_dir", sys.argv[2]])
"""
PROGRESS_MARKS = ("\\r", "it/s]", "s/it]", "examples/s]", "ba/s]", "%|")


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("demo") / "out"
    finished = subprocess.run(
        [sys.executable, "-c", SMALL_DEMO, str(ROOT / "examples" / "run_demo.py"), str(output_dir)],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=ROOT,
    )
    return finished, output_dir


@pytest.mark.slow
def test_demo_log_has_no_progress_bars_and_each_table_once(small_demo):
    finished, _ = small_demo
    log = finished.stdout + finished.stderr
    assert "mechanism check failed" in finished.stderr or finished.returncode == 0, finished.stderr[-3000:]
    assert [mark for mark in PROGRESS_MARKS if mark in log] == []
    assert finished.stdout.count("| full (test) | lenient |") == 1
    assert finished.stdout.count("| text-only (test) | lenient |") == 1


@pytest.mark.slow
def test_demo_results_report_attention_share_and_occlusion(small_demo):
    _, output_dir = small_demo
    summary = json.loads((output_dir / "demo_results.json").read_text())
    probe = summary["acn_image_decided_attention"]
    assert probe["entities"] == 4  # half of the 8 test tweets
    assert 0.0 <= probe["attention_share"] <= 1.0 and 0.0 < probe["chance_share"] < 1.0
    assert set(probe["occlusion"]) == {"none", "figure_cells", "other_cells"}
    for condition in probe["occlusion"].values():
        assert 0.0 <= condition["gold_probability"] <= 1.0 and 0.0 <= condition["tag_change_rate"] <= 1.0
    new_tweet = summary["new_tweet_attention"]
    assert new_tweet["figure_cells"] and set(new_tweet["attention_share"]) <= {"Kolbi"}
    assert (output_dir / "attention.png").stat().st_size > 0
