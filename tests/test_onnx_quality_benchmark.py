"""benchmarks/onnx_quality.py --summarise: the mean over several models' reports of each graph's F1 minus eager's,
checked against the differences computed by hand from made-up reports."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "onnx_quality.py"
EAGER = "eager torch (float32)"
INT8 = "ONNX Runtime int8 (acn-export --int8)"


def report(eager: tuple[float, float], int8: tuple[float, float], shares: tuple[float, float]) -> dict:
    """A report of one model: dev and test F1 (fractions) of eager and int8, and int8's shares of eager's tags."""

    def splits(f1s: tuple[float, float], agreement: tuple[float, float]) -> dict:
        return {
            split: {"overall_f1": f1, "tags_as_eager": share}
            for split, f1, share in zip(("validation", "test"), f1s, agreement, strict=True)
        }

    return {"results": {EAGER: splits(eager, (1.0, 1.0)), INT8: splits(int8, shares)}}


def run(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True)


def test_the_summary_is_the_mean_of_each_models_difference(tmp_path):
    reports = [
        report((0.7452, 0.7490), (0.7417, 0.7456), (0.99, 0.9953)),
        report((0.7431, 0.7475), (0.7404, 0.7462), (0.98, 0.9959)),
        report((0.7400, 0.7500), (0.7410, 0.7480), (0.97, 0.9900)),
    ]
    paths = []
    for number, content in enumerate(reports):
        paths.append(tmp_path / f"seed{number}.json")
        paths[-1].write_text(json.dumps(content))
    done = run("--summarise", *map(str, paths))
    assert done.returncode == 0, done.stderr

    dev = [-0.35, -0.27, +0.10]  # int8's dev F1 minus eager's, by hand
    test = [-0.34, -0.13, -0.20]
    row = next(line for line in done.stdout.splitlines() if line.startswith(f"| {INT8} |"))
    cells = [cell.strip() for cell in row.split("|")[2:-1]]
    assert cells == [
        f"{sum(dev) / 3:+.2f} (-0.35, -0.27, +0.10)",
        "98.00%",
        f"{sum(test) / 3:+.2f} (-0.34, -0.13, -0.20)",
        f"{(0.9953 + 0.9959 + 0.99) / 3:.2%}",
    ]
    assert "mean of 3 models" in done.stdout
    assert f"{EAGER}: dev F1 74.28 (74.52, 74.31, 74.00), test F1 74.88 (74.90, 74.75, 75.00)" in done.stdout
    assert f"| {EAGER} |" not in done.stdout  # eager against itself is no row


def test_a_file_that_is_no_report_is_named(tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"results": {}}))
    done = run("--summarise", str(other))
    assert done.returncode != 0 and f"{other}: not a report of this script" in done.stderr


def test_a_model_and_a_dataset_are_required_without_summarise():
    done = run()
    assert done.returncode == 2 and "--model and --dataset are required" in done.stderr
