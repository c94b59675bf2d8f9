"""Damaged or foreign model folders are refused when loaded, naming the tensors, wherever a model is loaded (the
classes, the Auto classes, the pipeline, acn-predict); and `trust_remote_code=True` runs the folder's own code.
Each test is a row of docs/reliability.md's table."""

import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForTokenClassification

from acn_mner import predict
from modeling_acn import AcnForTokenClassification, AcnModel, AcnPipeline
from modeling_acn.modeling_acn import bio_transition_table

from .pipeline_fixtures import tiny_pipeline


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "model"
    tiny_pipeline().save_pretrained(folder)
    return folder


def rewrite_weights(folder, change) -> None:
    weights = load_file(folder / "model.safetensors")
    change(weights)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


LOADERS = {
    "class": lambda folder: AcnForTokenClassification.from_pretrained(folder),
    "auto class": lambda folder: AutoModelForTokenClassification.from_pretrained(folder),
    "pipeline": lambda folder: AcnPipeline.from_pretrained(folder, device="cpu"),
}


@pytest.mark.bad_input(
    "a `model.safetensors` that lacks a weight (`crf.transitions`), has an extra one, or holds NaN",
    "refused on load by the classes, the Auto classes, the pipeline and `acn-predict`, naming the tensors",
)
@pytest.mark.parametrize("loader", sorted(LOADERS))
@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing", r"1 missing keys \(crf\.transitions\)"),
        ("unexpected", r"1 unexpected keys \(acn\.extra\.weight\)"),
        ("nan", r"NaN or infinite values in classifier\.weight"),
    ],
)
def test_a_damaged_checkpoint_is_refused_naming_the_tensors(folder, loader, damage, message):
    if damage == "missing":
        rewrite_weights(folder, lambda weights: weights.pop("crf.transitions"))
    elif damage == "unexpected":
        rewrite_weights(folder, lambda weights: weights.update({"acn.extra.weight": torch.zeros(2)}))
    else:
        rewrite_weights(folder, lambda weights: weights["classifier.weight"].__setitem__((0, 0), float("nan")))
    with pytest.raises(ValueError, match=rf"the checkpoint does not match the model: .*{message}"):
        LOADERS[loader](folder)


@pytest.mark.bad_input(
    "a `model.safetensors` without the int8 calibration (`acn.vision_int8.*`) that its `config.json` says the trunk "
    "has (`vision_int8_points`)",
    "refused on load, naming the tensors (`strict=False`: transformers' warning, and placeholders)",
)
def test_a_checkpoint_without_its_int8_calibration_is_refused(tmp_path):
    pipeline = tiny_pipeline()
    pipeline.model.acn.set_vision_calibration({"vision_int8_ranges": [[0.0, 1.0]] * 14})
    pipeline.save_pretrained(tmp_path / "model")
    calibration = ["acn.vision_int8.bias_corrections", "acn.vision_int8.channel_scales", "acn.vision_int8.ranges"]
    rewrite_weights(tmp_path / "model", lambda weights: [weights.pop(name) for name in calibration])
    with pytest.raises(ValueError, match=rf"3 missing keys \({re.escape(', '.join(calibration))}\)"):
        AcnForTokenClassification.from_pretrained(tmp_path / "model")
    _, info = AcnForTokenClassification.from_pretrained(tmp_path / "model", strict=False, output_loading_info=True)
    assert sorted(info["missing_keys"]) == calibration


def test_acn_predict_refuses_a_damaged_model_before_tagging(folder, tmp_path):
    rewrite_weights(folder, lambda weights: weights.pop("crf.transitions"))
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"text": "Obama visits Paris"}) + "\n")
    with pytest.raises(ValueError, match=r"missing keys \(crf\.transitions\)"):
        predict.main(
            ["--model", str(folder), "--input", str(rows), "--output", str(tmp_path / "out.jsonl"), "--device", "cpu"]
        )
    assert not (tmp_path / "out.jsonl").exists()


def test_strict_false_keeps_transformers_warning_only(folder):
    rewrite_weights(folder, lambda weights: weights.pop("crf.transitions"))
    model, info = AcnForTokenClassification.from_pretrained(folder, strict=False, output_loading_info=True)
    assert info["missing_keys"] == {"crf.transitions"} or list(info["missing_keys"]) == ["crf.transitions"]


def test_an_intact_folder_loads_with_the_same_weights(folder):
    model = AcnForTokenClassification.from_pretrained(folder)
    saved = load_file(folder / "model.safetensors")
    for name, tensor in model.state_dict().items():
        if name in saved:
            torch.testing.assert_close(tensor, saved[name])


@pytest.mark.bad_input(
    "`AcnPipeline.from_pretrained(folder, trust_remote_code=True)` with acn-mner installed",
    "the folder's own code runs (its classes load the model), as asked; without the option the installed classes do",
)
def test_trust_remote_code_runs_the_folders_code_even_with_the_package_installed(folder, tmp_path):
    marker = tmp_path / "folder-code-ran"
    with open(folder / "modeling_acn.py", "a", encoding="utf-8") as code:
        code.write(f"\nimport pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    installed = AcnPipeline.from_pretrained(folder, device="cpu")
    assert not marker.exists() and type(installed.model).__module__ == "modeling_acn.modeling_acn"
    trusted = AcnPipeline.from_pretrained(folder, device="cpu", trust_remote_code=True)
    assert marker.exists() and type(trusted.model).__module__.startswith("transformers_modules.")
    assert type(trusted.processor).__module__.startswith("transformers_modules.")
    assert (
        trusted("Obama visits Paris", return_tags=True)["tags"]
        == installed("Obama visits Paris", return_tags=True)["tags"]
    )


HEAD_KEYS = ["classifier.bias", "classifier.weight", "crf.end_transitions", "crf.start_transitions", "crf.transitions"]


def test_automodel_loads_the_base_of_a_head_checkpoint_and_reports_the_head_keys(folder, caplog):
    """As transformers does for any head: the base model loads, and the head's weights are reported, not refused."""
    base, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert type(base) is AcnModel
    assert sorted(info["unexpected_keys"]) == HEAD_KEYS
    assert "UNEXPECTED" in caplog.text  # transformers' load report
    saved = load_file(folder / "model.safetensors")
    for name, tensor in base.state_dict().items():
        if f"acn.{name}" in saved:
            torch.testing.assert_close(tensor, saved[f"acn.{name}"])


def test_the_head_keys_are_exactly_the_weights_outside_the_base_model(folder):
    head = AcnForTokenClassification.from_pretrained(folder)
    outside = sorted(name for name in head.state_dict() if not name.startswith("acn."))
    assert outside == HEAD_KEYS and all(map(AcnForTokenClassification.is_head_key, outside))
    assert not any(AcnForTokenClassification.is_head_key(name.removeprefix("acn.")) for name in head.acn.state_dict())


@pytest.mark.bad_input(
    "`AutoModel.from_pretrained(folder)` of a head checkpoint with an extra weight in the base model",
    "refused, naming it; the head's own weights are reported by transformers as unexpected, as for any head",
)
def test_a_base_model_still_refuses_a_damaged_head_checkpoint(folder):
    rewrite_weights(folder, lambda weights: weights.update({"acn.extra.weight": torch.zeros(2)}))
    with pytest.raises(ValueError, match=r"1 unexpected keys \(acn\.extra\.weight\)"):
        AutoModel.from_pretrained(folder)


NEW_LABELS = {0: "O", 1: "B-ORG", 2: "I-ORG"}


@pytest.mark.parametrize("loader", [AutoModelForTokenClassification, AcnForTokenClassification])
def test_ignore_mismatched_sizes_gives_a_new_label_set_a_fresh_classifier_and_crf(folder, loader, caplog):
    label2id = {label: index for index, label in NEW_LABELS.items()}
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):  # transformers' own refusal, as for any head
        loader.from_pretrained(folder, id2label=NEW_LABELS, label2id=label2id)
    model, info = loader.from_pretrained(
        folder, id2label=NEW_LABELS, label2id=label2id, ignore_mismatched_sizes=True, output_loading_info=True
    )
    assert sorted(key[0] for key in info["mismatched_keys"]) == HEAD_KEYS
    assert "MISMATCH" in caplog.text  # transformers' load report
    assert model.config.id2label == NEW_LABELS and model.crf.transitions.shape == (3, 3)
    assert model.classifier.weight.shape[0] == 3 and torch.equal(model.classifier.bias, torch.zeros(3))
    assert model.crf.transitions.abs().max() <= 0.1  # re-initialised as _init_weights does
    allowed, allowed_start = bio_transition_table(NEW_LABELS)
    assert torch.equal(model.bio_allowed, allowed) and torch.equal(model.bio_allowed_start, allowed_start)
    saved = load_file(folder / "model.safetensors")
    for name, tensor in model.acn.state_dict().items():
        if f"acn.{name}" in saved:
            torch.testing.assert_close(tensor, saved[f"acn.{name}"])
