"""AcnProcessor: one batch with every model input, label alignment, text-only batches, errors, and a fresh-process
load through the Auto classes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from modeling_acn.image_processing_acn import AcnImageProcessor
from modeling_acn.processing_acn import AcnProcessor
from modeling_acn.tokenization_acn import AcnTokenizer

TRAIN = [["Obama", "visits", "Paris", "."], ["Merkel", "meets", "@user", "in", "Berlin"]]
LABEL2ID = {"O": 0, "B-PER": 1, "I-PER": 2, "B-LOC": 3}
TEXTS = ["Obama visits Paris 🇫🇷 http://t.co/x", "Merkel  in Berlin", "@Someone meets Obama"]


def make_images():
    return [Image.new("RGB", (40, 30), (200, 10, 50)), None, Image.new("L", (16, 16), 90)]


@pytest.fixture
def processor():
    return AcnProcessor(AcnImageProcessor(), AcnTokenizer.from_corpus(TRAIN))


def test_processor_returns_one_batch_with_every_model_input(processor):
    batch = processor(TEXTS, images=make_images())
    assert set(batch) == {"input_ids", "char_ids", "attention_mask", "pixel_values", "image_mask"}
    assert batch["input_ids"].shape == (3, 5) and batch["input_ids"].dtype == torch.long
    assert batch["char_ids"].shape == (3, 5, 6) and batch["char_ids"].dtype == torch.long  # "Merkel", "<user>"
    assert batch["attention_mask"].tolist() == [[1] * 5, [1, 1, 1, 0, 0], [1, 1, 1, 0, 0]]
    assert batch["pixel_values"].shape == (3, 3, 224, 224) and batch["pixel_values"].dtype == torch.float32
    assert batch["image_mask"].tolist() == [True, False, True]
    assert batch["pixel_values"][1].eq(0).all()


def test_processor_only_orchestrates(processor):
    batch = processor(TEXTS, images=make_images(), return_offsets_mapping=True)
    text_only = processor.tokenizer(TEXTS, return_tensors="pt", return_offsets_mapping=True)
    images_only = processor.image_processor(make_images())
    for key in ("input_ids", "char_ids", "attention_mask", "offset_mapping"):
        assert torch.equal(batch[key], text_only[key])
    for key in ("pixel_values", "image_mask"):
        assert torch.equal(batch[key], images_only[key])


def test_without_images_the_batch_is_text_only(processor):
    batch = processor(TEXTS)
    assert set(batch) == {"input_ids", "char_ids", "attention_mask"}


def test_labels_are_aligned_to_words_and_padded_with_ignore_index(processor):
    words = [["Obama", "visits", "Paris"], ["Merkel"]]
    batch = processor(words, labels=[[1, 0, 3], [1]], is_split_into_words=True)
    assert batch["labels"].tolist() == [[1, 0, 3], [1, -100, -100]]
    assert batch["labels"].dtype == torch.long
    named = processor(words, labels=[["B-PER", "O", "B-LOC"], ["B-PER"]], label2id=LABEL2ID, is_split_into_words=True)
    assert torch.equal(named["labels"], batch["labels"])


def test_labels_follow_raw_text_splitting(processor):
    batch = processor("Obama's Paris", labels=[["B-PER", "O", "O", "B-LOC"]], label2id=LABEL2ID)
    assert batch["labels"].tolist() == [[1, 0, 0, 3]]


def test_labels_are_cut_with_the_words(processor):
    words = [["Obama", "visits", "Paris"], ["Merkel"]]
    batch = processor(words, labels=[[1, 0, 3], [1]], is_split_into_words=True, truncation=True, max_length=2)
    assert batch["labels"].tolist() == [[1, 0], [1, -100]]


def test_return_tensors_pt_is_the_default(processor):
    kwargs = dict(images=make_images(), labels=[[1, 0, 3, 0, 0], [1, 0, 3], [0, 0, 1]], return_offsets_mapping=True)
    default, torch_batch = processor(TEXTS, **kwargs), processor(TEXTS, **kwargs, return_tensors="pt")
    assert default.keys() == torch_batch.keys()
    for key, value in default.items():
        assert isinstance(torch_batch[key], torch.Tensor) and torch.equal(torch_batch[key], value), key


@pytest.mark.parametrize("return_tensors", ["np", None])
def test_return_tensors_gives_numpy_arrays_or_python_lists_of_the_same_values(processor, return_tensors):
    kwargs = dict(images=make_images(), labels=[[1, 0, 3, 0, 0], [1, 0, 3], [0, 0, 1]], return_offsets_mapping=True)
    expected = processor(TEXTS, **kwargs)  # torch tensors
    batch = processor(TEXTS, **kwargs, return_tensors=return_tensors)
    assert (
        batch.keys()
        == expected.keys()
        == {"input_ids", "char_ids", "attention_mask", "pixel_values", "image_mask", "labels", "offset_mapping"}
    )
    for key, value in expected.items():
        if return_tensors == "np":
            assert isinstance(batch[key], np.ndarray) and batch[key].dtype == value.numpy().dtype, key
            np.testing.assert_array_equal(batch[key], value.numpy())
        else:
            assert type(batch[key]) is list and batch[key] == value.tolist(), key
    if return_tensors is None:
        json.dumps(dict(batch))  # python numbers all the way down: numpy scalars are not JSON-serializable


def test_return_tensors_refuses_other_frameworks(processor):
    with pytest.raises(ValueError, match="return_tensors must be 'pt', 'np' or None, got 'tf'"):
        processor(TEXTS, return_tensors="tf")


def test_processor_errors_name_the_problem(processor):
    words = [["Obama", "visits"], ["Merkel"]]
    with pytest.raises(ValueError, match="example 1 has 1 words but 2 labels"):
        processor(words, labels=[[1, 0], [1, 0]], is_split_into_words=True)
    with pytest.raises(ValueError, match="got 1 label sequences for 2 texts"):
        processor(words, labels=[[1, 0]], is_split_into_words=True)
    with pytest.raises(ValueError, match="label 'B-PER' is a string: pass label2id to map it to an id"):
        processor(["Obama"], labels=[["B-PER"]], is_split_into_words=True)
    with pytest.raises(ValueError, match=r"label 'B-ORG' is not in label2id \(\['B-LOC', 'B-PER', 'I-PER', 'O'\]\)"):
        processor(["Obama"], labels=[["B-ORG"]], label2id=LABEL2ID, is_split_into_words=True)
    with pytest.raises(ValueError, match="got 1 images for 2 texts; use None for a tweet without image"):
        processor(words, images=[None], is_split_into_words=True)


FRESH_PROCESS_SCRIPT = """
import sys

sys.modules["modeling_acn"] = None  # the project must not be importable: everything comes from the folder
from PIL import Image
from safetensors.torch import save_file
from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

folder, texts = sys.argv[1], {texts!r}
images = [Image.new("RGB", (40, 30), (200, 10, 50)), None, Image.new("L", (16, 16), 90)]
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
image_processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
for loaded in (processor, tokenizer, image_processor):
    assert type(loaded).__module__.startswith("transformers_modules."), type(loaded).__module__
outputs = dict(processor(texts, images=images, labels={labels!r}, return_offsets_mapping=True))
outputs.update({{"tokenizer." + k: v for k, v in tokenizer(texts, return_tensors="pt").items()}})
outputs.update({{"image_processor." + k: v for k, v in image_processor(images).items()}})
save_file({{k: v.contiguous() for k, v in outputs.items()}}, "outputs.safetensors")
"""


@pytest.mark.slow
def test_fresh_process_loads_the_saved_folder_with_auto_classes(processor, tmp_path):
    labels = [[1, 0, 3, 0, 0], [1, 0, 3], [0, 0, 1]]
    folder = tmp_path / "saved"
    processor.save_pretrained(folder)
    assert {"processing_acn.py", "tokenization_acn.py", "image_processing_acn.py"} <= {p.name for p in folder.iterdir()}
    script = tmp_path / "load.py"
    script.write_text(FRESH_PROCESS_SCRIPT.format(texts=TEXTS, labels=labels))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, str(script), str(folder)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    loaded = load_file(tmp_path / "outputs.safetensors")
    expected = dict(processor(TEXTS, images=make_images(), labels=labels, return_offsets_mapping=True))
    expected.update({"tokenizer." + k: v for k, v in processor.tokenizer(TEXTS, return_tensors="pt").items()})
    expected.update({"image_processor." + k: v for k, v in processor.image_processor(make_images()).items()})
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key
