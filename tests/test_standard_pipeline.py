"""transformers' own pipeline factory on a saved ACN folder: `pipeline("token-classification", ...)`, its alias
`pipeline("ner", ...)` and `pipeline("multimodal-ner", ...)` all build AcnPipeline from the folder's code, with each
task's default output schema, for every kind of input; loading leaves the process-wide registry to other models and
prints no warning."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modeling_acn import AcnPipeline
from tests.pipeline_fixtures import TWEET, striped_image, tiny_pipeline

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("multimodal-ner", "token-classification", "ner")  # "ner": transformers' alias of token-classification
DEFAULT_AGGREGATION = {"multimodal-ner": "simple", "token-classification": "none", "ner": "none"}
WORD_KEYS = {"entity", "score", "index", "word", "start", "end"}
ENTITY_KEYS = {"entity_group", "score", "word", "start", "end"}
TEXTS = [TWEET, "Merkel meets Obama", "Paris  in the rain", "Obama visits Berlin"]


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def folder(pipe, tmp_path_factory):
    """What a user gets from `model.save_pretrained` and `processor.save_pretrained`."""
    folder = tmp_path_factory.mktemp("acn") / "model"
    pipe.model.save_pretrained(folder)
    pipe.processor.save_pretrained(folder)
    return folder


def comparable(result):
    """Pipeline results with scores rounded, so that runs in two processes compare exactly."""
    return json.loads(json.dumps(result), parse_float=lambda value: round(float(value), 5))


@pytest.mark.parametrize("saved_by", ["model", "pipeline"])
def test_the_folder_names_the_pipeline_for_every_task(pipe, folder, saved_by, tmp_path):
    if saved_by == "pipeline":
        folder = tmp_path / "model"
        pipe.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    entry = {"impl": "pipeline_acn.AcnPipeline", "pt": ["AutoModelForTokenClassification"], "type": "multimodal"}
    assert config["custom_pipelines"] == {task: entry for task in TASKS}
    assert (folder / "pipeline_acn.py").is_file()


def test_the_default_aggregation_is_the_tasks(pipe):
    standard = AcnPipeline(model=pipe.model, processor=pipe.processor, device="cpu", task="token-classification")
    grouped = AcnPipeline(model=pipe.model, processor=pipe.processor, device="cpu", task="multimodal-ner")
    words, entities = standard(TWEET), grouped(TWEET)
    assert words and all(set(word) == WORD_KEYS for word in words)
    assert entities and all(set(entity) == ENTITY_KEYS for entity in entities)
    assert words == grouped(TWEET, aggregation_strategy="none")
    assert entities == standard(TWEET, aggregation_strategy="simple")
    alias = AcnPipeline(model=pipe.model, processor=pipe.processor, device="cpu", task="ner")
    assert alias(TWEET) == words  # transformers' alias of token-classification, with its defaults
    for tagger in (standard, grouped):
        with pytest.raises(ValueError, match="aggregation_strategy must be 'none' or 'simple'.*got 'first'"):
            tagger(TWEET, aggregation_strategy="first")


FACTORY_SCRIPT = """
import json
import sys

import modeling_acn  # registers multimodal-ner: the folder's copy of pipeline_acn.py must not register it again
from datasets import Dataset
from transformers import pipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.pt_utils import KeyDataset

folder, photo, texts = sys.argv[1], sys.argv[2], {texts!r}
transformers_own = dict(PIPELINE_REGISTRY.supported_tasks["token-classification"])
results = {{}}
for task in {tasks!r}:
    pipe = pipeline(task, model=folder, trust_remote_code=True, device="cpu")
    assert type(pipe).__name__ == "AcnPipeline", type(pipe)
    assert type(pipe).__module__.startswith("transformers_modules."), type(pipe).__module__  # the folder's code
    results[task] = {{
        "single": [pipe(text) for text in texts],
        "list": pipe(texts, batch_size=3),
        "generator": list(pipe((text for text in texts), batch_size=3)),
        "KeyDataset": list(pipe(KeyDataset(Dataset.from_dict({{"text": texts}}), "text"), batch_size=3)),
        "image": pipe(texts[0], image=photo),
        "images": pipe(texts[0], images=photo),
    }}
assert PIPELINE_REGISTRY.supported_tasks["token-classification"] == transformers_own  # other NER models keep theirs
try:
    pipeline(model=folder, trust_remote_code=True, device="cpu")
except RuntimeError as error:
    results["no task"] = str(error)
print(json.dumps(results))
"""


@pytest.mark.slow
def test_fresh_process_gets_the_acn_pipeline_for_every_task_without_warnings(pipe, folder, tmp_path):
    photo = tmp_path / "photo.png"
    striped_image().save(photo)
    script = tmp_path / "load.py"
    script.write_text(FACTORY_SCRIPT.format(texts=TEXTS, tasks=TASKS))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(script), str(folder), str(photo)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "already registered" not in result.stdout + result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    for task in TASKS:
        aggregation = DEFAULT_AGGREGATION[task]
        expected = comparable([pipe(text, aggregation_strategy=aggregation) for text in TEXTS])
        assert any(expected) and {frozenset(item) for items in expected for item in items} == {
            frozenset(WORD_KEYS if aggregation == "none" else ENTITY_KEYS)
        }
        for inputs in ("single", "list", "generator", "KeyDataset"):
            assert comparable(loaded[task][inputs]) == expected, (task, inputs)
        with_image = pipe(TEXTS[0], image=str(photo), aggregation_strategy=aggregation)
        assert comparable(loaded[task]["image"]) == comparable(loaded[task]["images"]) == comparable(with_image), task
    assert "Pick one in multimodal-ner, ner, token-classification" in loaded["no task"]
