"""benchmarks/predict_onnx.py on the tiny text-only export: acn-predict runs with each worker count and the pipeline
runs once, each in a process of its own, and the report gives every configuration's tweets/s against the pipeline."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from acn_mner.cpu import cpu_capabilities

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "predict_onnx.py"


@pytest.mark.slow
def test_acn_predict_and_the_pipeline_are_timed_on_the_same_rows(tmp_path, text_export):
    _, exported = text_export
    models = tmp_path / "models"
    shutil.copytree(exported, models / "acn-onnx")
    words = "RT @user : Obama visits Paris today and Apple opens a store in London near the river #news".split()
    texts = [" ".join(words * repeat) for repeat in (1, 2, 3)]  # long enough that 8000 rows take clearly longer than 32
    (models / "corpora.json").write_text(json.dumps({"other": ["hi"], "tiny corpus": texts}))  # as serve.py writes
    output = tmp_path / "report.json"
    command = [sys.executable, str(SCRIPT), "--models_dir", str(models), "--rows", "8000", "--workers", "0", "1"]
    command += ["--corpus", "tiny corpus"]
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command + ["--output", str(output)], capture_output=True, text=True, env=environment)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(output.read_text())

    assert report["rows"] == 8000 and report["corpus"] == "tiny corpus"
    assert report["cpu"]["model"] == cpu_capabilities()["model"]
    speeds = report["tweets_per_s"]
    assert set(speeds) == {"acn-predict, --num_workers 0", "acn-predict, --num_workers 1", "AcnPipeline, one call"}
    assert all(speed > 0 for speed in speeds.values())
    table = report["markdown"]
    assert f"| 8000 {report['corpus']} texts, int8, one thread |" in table
    assert "| AcnPipeline(texts, batch_size=32), backend onnxruntime |" in table and "| 1.00x |" in table
    assert done.stdout.count("CPU: ") == 1 and table in done.stdout


def test_a_corpus_serve_py_did_not_write_is_refused(tmp_path):
    models = tmp_path / "models"
    (models / "acn-onnx").mkdir(parents=True)
    (models / "acn-onnx" / "model_int8.onnx").write_bytes(b"")
    (models / "corpora.json").write_text(json.dumps({"demo corpus test": ["hi"]}))
    done = run_script("--models_dir", str(models), "--corpus", "nope", "--output", str(tmp_path / "report.json"))
    assert done.returncode != 0 and "--corpus 'nope' is not in" in done.stderr and "['demo corpus test']" in done.stderr
    assert not (tmp_path / "report.json").exists()


def run_script(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True)


def test_too_few_rows_are_refused():
    done = run_script("--rows", "32")
    assert done.returncode != 0 and "--rows must be more than 32, got 32" in done.stderr
