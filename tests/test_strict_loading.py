"""Damaged or foreign model folders are refused when loaded, naming the tensors, wherever a model is loaded (the
classes, the Auto classes, the pipeline, acn-predict); and `trust_remote_code=True` runs the folder's own code.
Each test is a row of docs/reliability.md's table."""

import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForTokenClassification

from acn_mner import predict
from modeling_acn import AcnForTokenClassification, AcnPipeline

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
