"""README.md cannot drift from the code: every ```python block runs as pasted (each in a fresh interpreter, in a folder
where `make demo`'s model and picture exist, here a tiny model), and every command of README.md and docs/ names a
script or console command that exists, with flags that its --help lists."""

import ast
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from acn_mner import demo_corpus
from acn_mner.corpus import load_twitter_mner
from acn_mner.feature_cache import feature_extractor, save_feature_cache
from modeling_acn import (
    AcnConfig,
    AcnForTokenClassification,
    AcnImageProcessor,
    AcnPipeline,
    AcnProcessor,
    AcnTokenizer,
)

from .conftest import TINY_SIZES

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
DEMO_MODEL = Path("outputs/demo/acn")  # what `make demo` writes, relative to the folder the user works in
DEMO_PICTURE = Path("outputs/demo/new_tweet.jpg")
DEMO_FEATURES = Path("outputs/demo/features")  # the demo's cached image features, with the trunk beside them
DEMO_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-OTHER", "I-OTHER"]
CONSOLE_COMMANDS = {
    "acn-predict": "acn_mner.predict",
    "acn-explain": "acn_mner.explain",
    "acn-dataset": "acn_mner.dataset_command",
    "acn-train": "acn_mner.train",
    "acn-export": "acn_mner.onnx_export",
}


def fenced_blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.S | re.M)


PYTHON_BLOCKS = fenced_blocks(README, "python")


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    """A working folder with `outputs/demo/acn` (a tiny ACN with the demo's labels and its corpus's words, saved as
    training saves it), `outputs/demo/new_tweet.jpg` (a demo picture) and the demo's cached features."""
    folder = tmp_path_factory.mktemp("user")
    corpus = write_demo_features(folder)
    write_demo_model(folder, AcnTokenizer.from_corpus(corpus["train"]["tokens"]), "B-LOC")  # blocks print names
    picture = demo_corpus.draw_image(np.random.default_rng(0), "LOC")
    picture.save(folder / DEMO_PICTURE)
    assert Image.open(folder / DEMO_PICTURE).size == (224, 224)
    return folder


def write_demo_model(folder: Path, tokenizer: AcnTokenizer, every_word: str) -> None:
    """A tiny ACN that tags every word `every_word`, saved at `outputs/demo/acn` with its processor."""
    torch.manual_seed(0)
    sizes = {**TINY_SIZES, "vocab_size": len(tokenizer), "char_vocab_size": tokenizer.char_vocab_size}
    model = AcnForTokenClassification(AcnConfig(**sizes, id2label=dict(enumerate(DEMO_LABELS)))).eval()
    with torch.no_grad():
        model.classifier.bias[DEMO_LABELS.index(every_word)] = 10.0
    AcnPipeline(model=model, processor=AcnProcessor(AcnImageProcessor(), tokenizer), device="cpu").save_pretrained(
        folder / DEMO_MODEL
    )


def write_demo_features(folder: Path):
    """A demo corpus's VGG-16 features from a seeded random trunk, as `make demo` caches them; the corpus is returned.
    Its 120 training tweets are about the fewest on which the README's Trainer recipe learns to tag."""
    corpus = demo_corpus.write_demo_corpus(folder / "outputs/demo/corpus", num_train=120, num_valid=16, num_test=8)
    dataset = load_twitter_mner(corpus, corpus / demo_corpus.IMAGE_DIR)
    extractor, image_processor = feature_extractor(vision_weights="random", seed=0)
    save_feature_cache(dataset, extractor, image_processor, folder / DEMO_FEATURES, cache_dir=folder / "cache")
    return dataset


def test_the_readme_has_a_quickstart_that_uses_the_demo_model():
    assert PYTHON_BLOCKS and str(DEMO_MODEL) in PYTHON_BLOCKS[0] and str(DEMO_PICTURE) in PYTHON_BLOCKS[0]


@pytest.fixture(scope="module")
def block_runs(demo_folder):
    """Each README python block run once as pasted, in a fresh interpreter in the demo folder: its finished process."""
    runs = {}

    def run(index: int) -> subprocess.CompletedProcess:
        if index not in runs:
            runs[index] = subprocess.run(
                [sys.executable, "-c", PYTHON_BLOCKS[index]],
                cwd=demo_folder,
                capture_output=True,
                text=True,
                timeout=300,
            )
        return runs[index]

    return run


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_readme_python_block_runs_as_pasted(block_runs, index):
    block, finished = PYTHON_BLOCKS[index], block_runs(index)
    assert finished.returncode == 0, f"README python block {index + 1}:\n{block}\n{finished.stderr[-3000:]}"
    assert finished.stdout.strip(), f"README python block {index + 1} printed nothing"
    assert not re.search(r"\bLABEL_\d+\b", finished.stdout), "entity names, not label ids"


@pytest.mark.slow
def test_trainer_recipe_ends_with_a_model_that_tags_and_no_warning(block_runs):
    """The recipe a Hugging Face user copies first: its evaluation shows entities found, and nothing warns (pinned
    memory without a GPU, seqeval's undefined precision of a model that finds no entity)."""
    index = PYTHON_BLOCKS.index(trainer_recipe())
    finished = block_runs(index)
    assert finished.returncode == 0, finished.stderr[-3000:]
    scores = ast.literal_eval(finished.stdout.strip().splitlines()[-1])
    assert scores["eval_f1"] > 0, scores
    warned = [line for line in finished.stderr.splitlines() if re.search(r"Warning|pin_memory|ill-defined", line)]
    assert warned == []


@pytest.mark.slow
def test_token_classification_block_prints_one_entry_per_word(tmp_path):
    """As its text says, even where every word is tagged O (transformers' default ignore_labels=["O"] would print
    none): the first loop prints each word of the tweet with its index."""
    (block,) = [block for block in PYTHON_BLOCKS if 'pipeline("token-classification"' in block]
    write_demo_model(tmp_path, AcnTokenizer.from_corpus([["look", "at", "Kolbi", "today", "!"]]), "O")
    demo_corpus.draw_image(np.random.default_rng(0), "LOC").save(tmp_path / DEMO_PICTURE)
    finished = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    words = [line.split()[:3] for line in finished.stdout.splitlines() if line[:1].isdigit()]
    assert words == [[str(index), word, "O"] for index, word in enumerate(["look", "at", "Kolbi", "today", "!"])]


def trainer_recipe() -> str:
    (block,) = [block for block in PYTHON_BLOCKS if "Trainer(" in block]
    return block


def run_in(folder: Path, code: str) -> dict:
    """Run code as a pasted snippet would run, with `folder` as the working directory; return its names."""
    namespace = {"__name__": "__main__"}
    previous = Path.cwd()
    os.chdir(folder)
    try:
        exec(compile(code, "README.md", "exec"), namespace)
    finally:
        os.chdir(previous)
    return namespace


@pytest.mark.slow
def test_trainer_recipe_model_tags_pixels_as_it_tags_their_cached_features(demo_folder):
    """The README's Trainer recipe, verbatim: the model it trains carries the trunk of its features, so tagging the
    test pictures gives the tags of the test features."""
    from modeling_acn import AcnDataCollator

    names = run_in(demo_folder, trainer_recipe())
    model, processor, test = names["model"].eval(), names["processor"], names["corpus"]["test"]
    tags = {}
    for source in ("features", "pixels"):
        rows = [test[index] for index in range(test.num_rows)]
        batch = AcnDataCollator(processor, image_source=source)(rows)
        with torch.no_grad():
            logits = model(**{key: value for key, value in batch.items() if key != "labels"}).logits
        tags[source] = model.decode(logits, batch["attention_mask"])
    assert any(rows_tags for rows_tags in tags["features"])
    assert tags["pixels"] == tags["features"]


@pytest.mark.slow
def test_trainer_recipe_without_the_features_trunk_is_refused(demo_folder):
    recipe = trainer_recipe()
    line = next(line for line in recipe.splitlines() if "load_vision_weights" in line)
    with pytest.raises(
        ValueError,
        match=r"computed by the vision trunk vgg16:\w{12}, and this model's trunk is vgg16:\w{12}: "
        r"load .*vgg16_trunk\.safetensors",
    ):
        run_in(demo_folder, recipe.replace(line, ""))


def commands(path: Path) -> list[list[str]]:
    """The command lines of a document's ```bash blocks (continuations joined, comments and variables dropped)."""
    found = []
    for block in fenced_blocks(path, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #", 1)[0].split(" # ", 1)[0].strip()
            if line and not line.startswith("#"):
                words = [word for word in shlex.split(line) if not re.fullmatch(r"[A-Z_]+=.*", word)]
                found.append(words)
    return found


def invoked(words: list[str]) -> tuple[list[str], list[str]] | None:
    """(the --help command of the script or console command that `words` runs, its flags), or None for other tools."""
    for position, word in enumerate(words):
        if word in CONSOLE_COMMANDS:
            return [sys.executable, "-m", CONSOLE_COMMANDS[word]], words[position + 1 :]
        if word == "-m" and words[position + 1 : position + 2] and words[position + 1].startswith("acn_mner"):
            return [sys.executable, "-m", words[position + 1]], words[position + 2 :]
        if word.endswith(".py") and words[0] in ("python", "accelerate", "/usr/bin/time", "OMP_NUM_THREADS=1"):
            return [sys.executable, word], words[position + 1 :]
    return None


DOCUMENTED = [(path.relative_to(ROOT), words) for path in DOCUMENTS for words in commands(path) if invoked(words)]


def test_documents_show_commands():
    assert any(words[0] == "python" for _, words in DOCUMENTED)


@pytest.mark.slow
def test_every_documented_command_exists_and_its_flags_are_known():
    helps = {}
    problems = []
    for document, words in DOCUMENTED:
        program, arguments = invoked(words)
        if program[1] != "-m" and not (ROOT / program[1]).is_file():
            problems.append(f"{document}: {program[1]} does not exist")
            continue
        key = tuple(program)
        subcommand = [arguments[0]] if arguments and arguments[0] == "cache-features" else []
        if key + tuple(subcommand) not in helps:
            shown = subprocess.run(
                [*program, *subcommand, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300
            )
            assert shown.returncode == 0, f"{' '.join(program)} --help: {shown.stderr[-2000:]}"
            helps[key + tuple(subcommand)] = shown.stdout
        known = helps[key + tuple(subcommand)]
        own = (
            arguments[: arguments.index("--train_args") + 1] if "--train_args" in arguments else arguments
        )  # the rest: train_acn's
        for flag in (argument.split("=")[0] for argument in own if argument.startswith("--")):
            if not re.search(rf"{re.escape(flag)}\b", known):
                problems.append(f"{document}: `{' '.join(words)}`: {flag} is not an option of {program[-1]}")
    assert problems == []


def test_no_document_names_a_module_path_that_is_gone():
    gone = (
        "acn_commands",
        "dataset_script/demo_corpus.py",
        "examples/acn_data.py",
        "examples/acn_checkpoint.py",
        "examples/model_card.py",
        "examples/ner_report.py",
        "metrics/seqeval_mner",
        "readme_snippet_probe",
    )
    stale = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in [*DOCUMENTS, ROOT / "model_card.md"]
        for name in gone
        if name in path.read_text(encoding="utf-8").replace("acn_mner/metrics/seqeval_mner", "")
    ]
    assert stale == []
