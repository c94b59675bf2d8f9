"""ONNX folders (what `acn-export` writes and `--backend onnxruntime` loads) whose parts do not fit together, and
configurations with more labels than a model can hold: a broken or non-finite `onnx_config.json`, a truncated graph,
a graph of another model, a vision graph of another trunk, 20,000 labels. Each is refused as it loads, with one line
naming the file and what is wrong. Each test is a row of docs/reliability.md's table."""

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from acn_mner.onnx_export import export_vision_graph
from modeling_acn import AcnConfig
from modeling_acn.configuration_acn import MAX_LABELS
from modeling_acn.onnx_runtime_acn import ONNX_CONFIG_FILE, TRUNK_ID_KEY, AcnOnnxModel

from .conftest import BIO_LABELS, TINY_SIZES
from .pipeline_fixtures import striped_image
from .test_onnx import TWEETS, needs_onnxruntime

ROOT = Path(__file__).resolve().parents[1]


def copied(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def rewrite_onnx_config(folder: Path, change) -> None:
    """Apply `change` to the folder's onnx_config.json (a dict, changed in place), written back as JSON (NaN and
    Infinity included, as Python's json writes them)."""
    exported = json.loads((folder / ONNX_CONFIG_FILE).read_text())
    change(exported)
    (folder / ONNX_CONFIG_FILE).write_text(json.dumps(exported))


def crf_scores(tags: int) -> dict:
    return {"start_transitions": [0.0] * tags, "end_transitions": [0.0] * tags, "transitions": [[0.0] * tags] * tags}


def assert_refused(folder: Path, message: str, **options) -> None:
    """Loading the folder is a ValueError of one line matching `message`."""
    with pytest.raises(ValueError, match=message) as refusal:
        AcnOnnxModel(folder, **options)
    assert "\n" not in str(refusal.value)


# --- onnx_config.json -------------------------------------------------------------------------------------------


@needs_onnxruntime
@pytest.mark.bad_input(
    "an ONNX folder whose `onnx_config.json` has NaN, -Infinity or beyond-float32 CRF scores",
    "`ValueError` naming the file, the table and the count, as the folder loads (it loaded, and every row failed)",
)
@pytest.mark.parametrize(
    "table, position, value",
    [
        ("transitions", (1, 2), float("nan")),
        ("start_transitions", (0,), float("-inf")),
        ("end_transitions", (3,), 1e39),
    ],
)
def test_non_finite_crf_scores_are_refused_naming_the_file(text_export, tmp_path, table, position, value):
    folder = copied(text_export[1], tmp_path)

    def poison(exported):
        row = exported["crf"][table]
        for index in position[:-1]:
            row = row[index]
        row[position[-1]] = value

    rewrite_onnx_config(folder, poison)
    assert_refused(folder, rf"{ONNX_CONFIG_FILE}: crf {table} holds 1 NaN or infinite scores")


@needs_onnxruntime
@pytest.mark.bad_input(
    "an ONNX folder whose labels disagree: CRF scores for 4 tags, or config.json's 6 labels against a graph scoring 5",
    "`ValueError` naming the file and both counts, as the folder loads",
)
@pytest.mark.parametrize("case", ["crf for fewer labels", "one CRF table short", "config.json has another label"])
def test_label_counts_that_disagree_are_refused_naming_the_file(text_export, tmp_path, case):
    folder = copied(text_export[1], tmp_path)
    if case == "crf for fewer labels":
        rewrite_onnx_config(folder, lambda exported: exported.update(crf=crf_scores(4)))
        assert_refused(
            folder,
            rf"{ONNX_CONFIG_FILE}: crf start_transitions has shape \(4,\), and config.json's 5 labels need \(5,\)",
        )
    elif case == "one CRF table short":
        rewrite_onnx_config(folder, lambda exported: exported["crf"]["transitions"].pop())
        assert_refused(
            folder, rf"{ONNX_CONFIG_FILE}: crf transitions has shape \(4, 5\), and config.json's 5 labels need \(5, 5\)"
        )
    else:  # a sixth label in config.json and CRF scores for six: the graph still scores five
        config = json.loads((folder / "config.json").read_text())
        config["id2label"]["5"], config["label2id"]["B-MISC"] = "B-MISC", 5
        (folder / "config.json").write_text(json.dumps(config))
        rewrite_onnx_config(folder, lambda exported: exported.update(crf=crf_scores(6)))
        assert_refused(
            folder,
            r"model.onnx: logits has shape \['batch', 'words', 5\], "
            r"and config.json's model needs \['any', 'any', 6\] \(a score per label\)$",
        )


@needs_onnxruntime
@pytest.mark.bad_input(
    "an ONNX folder whose `onnx_config.json` is not JSON, not UTF-8, not an object, or has values of the wrong type",
    "`ValueError` naming the file and what is wrong (a traceback, or a JSON error naming no file)",
)
@pytest.mark.parametrize(
    "broken, message",
    [
        ("{", r"onnx_config.json is not valid JSON: Expecting property name"),
        (b'{"crf": "\xe9"}', r"onnx_config.json is not valid JSON: 'utf-8' codec can't decode"),
        ("[]", r"onnx_config.json must be a JSON object with 'crf' and 'vision_trunk_id'"),
        (
            {"crf": "scores"},
            r"onnx_config.json: crf must hold start_transitions, end_transitions, transitions, got 'scores'",
        ),
        (
            {"crf": {"start_transitions": ["a"] * 5, "end_transitions": [0] * 5, "transitions": [[0] * 5] * 5}},
            r"onnx_config.json: crf start_transitions must be numbers, got \['a', ",
        ),
        (
            {"crf": {"start_transitions": [0] * 5, "end_transitions": [0] * 5, "transitions": [[0] * 5] * 4 + [[0]]}},
            r"onnx_config.json: crf transitions must be numbers",
        ),
        ({"crf": None}, r"onnx_config.json has no CRF scores, and config.json's decoder is 'crf'"),
        (
            {"vision_trunk_id": "vgg16:00"},
            r"onnx_config.json records the vision trunk 'vgg16:00', and config.json's model has no images",
        ),
    ],
    ids=["truncated", "not utf-8", "a list", "crf a string", "scores as strings", "ragged scores", "no crf", "a trunk"],
)
def test_a_broken_onnx_config_is_one_line_naming_the_file(text_export, tmp_path, broken, message):
    """`broken`: the file's text, or values that replace the exported file's."""
    folder = copied(text_export[1], tmp_path)
    if isinstance(broken, dict):
        rewrite_onnx_config(folder, lambda exported: exported.update(broken))
    else:
        (folder / ONNX_CONFIG_FILE).write_bytes(broken if isinstance(broken, bytes) else broken.encode())
    assert_refused(folder, message)


# --- the graphs -------------------------------------------------------------------------------------------------


@needs_onnxruntime
@pytest.mark.bad_input(
    "an ONNX folder with a truncated or empty `model.onnx` or `vision.onnx`",
    "`ValueError` naming the file (ONNX Runtime's InvalidProtobuf traceback)",
)
@pytest.mark.parametrize("graph, keep", [("model.onnx", 0.5), ("model.onnx", 0), ("vision.onnx", 0.5)])
def test_a_truncated_graph_is_one_line_naming_the_file(text_export, image_export, tmp_path, graph, keep):
    folder = copied((image_export if graph == "vision.onnx" else text_export)[1], tmp_path)
    data = (folder / graph).read_bytes()
    (folder / graph).write_bytes(data[: int(len(data) * keep)])
    assert_refused(folder, rf"{graph} is not a loadable ONNX graph \(truncated or corrupt\?\): ")


@needs_onnxruntime
@pytest.mark.bad_input(
    "an image model's ONNX folder holding a text-only `model.onnx`, or a text model's holding an image model's",
    "`ValueError` naming the file and the missing or unexpected inputs (it loaded, and every image was ignored)",
)
def test_a_graph_of_another_model_is_refused_naming_its_inputs(text_export, image_export, tmp_path):
    text_folder, image_folder = copied(text_export[1], tmp_path / "text"), copied(image_export[1], tmp_path / "image")
    shutil.copy(text_export[1] / "model.onnx", image_folder / "model.onnx")
    assert_refused(
        image_folder,
        r"model.onnx was exported from another model: its inputs do not match config.json's "
        r"\(use_image=True, .*\): missing image_features, image_mask$",
    )
    shutil.copy(image_export[1] / "model.onnx", text_folder / "model.onnx")
    assert_refused(
        text_folder,
        r"model.onnx was exported from another model: .*\(use_image=False, .*\): "
        r"unexpected image_features, image_mask$",
    )


@pytest.fixture(scope="module")
def other_trunk_graph(image_export, tmp_path_factory):
    """`vision.onnx` of the image model with one trunk weight changed: the same backbone and shapes, another trunk."""
    model = copy.deepcopy(image_export[0].model)
    with torch.no_grad():
        model.acn.vision[0].weight[0, 0, 0, 0] += 1.0
    path = tmp_path_factory.mktemp("other-trunk") / "vision.onnx"
    export_vision_graph(model, path)
    return path, model.vision_trunk_id()


class ResNetShapedTrunk(torch.nn.Module):
    """A vision graph of another backbone's shape, without a trunk record (as exports before the record)."""

    def __init__(self):
        super().__init__()
        self.project = torch.nn.Linear(3, 2048)

    def forward(self, pixel_values):
        regions = torch.nn.functional.avg_pool2d(pixel_values, 32).flatten(2).transpose(1, 2)  # (images, 49, 3)
        return self.project(regions)  # (images, 49, 2048)


@needs_onnxruntime
@pytest.mark.bad_input(
    "an ONNX folder whose `vision.onnx` holds another trunk than `onnx_config.json` records",
    "`ValueError` naming the file and both trunk ids, or the shapes where the graph predates the record "
    "(it loaded, and computed features its model never saw)",
)
def test_a_vision_graph_of_another_trunk_is_refused(image_export, other_trunk_graph, tmp_path):
    eager, exported = image_export
    graph, other_id = other_trunk_graph
    folder = copied(exported, tmp_path)
    shutil.copy(graph, folder / "vision.onnx")
    own = eager.model.vision_trunk_id()
    assert_refused(
        folder, rf"vision.onnx holds the vision trunk {other_id[:18]}, and {ONNX_CONFIG_FILE} records {own[:18]}: "
    )
    torch.onnx.export(
        ResNetShapedTrunk().eval(),
        (torch.rand(2, 3, 224, 224),),
        str(folder / "vision.onnx"),
        dynamo=True,
        input_names=["pixel_values"],
        output_names=["image_features"],
        dynamic_shapes=({0: torch.export.Dim("images", min=1)},),
    )
    assert_refused(
        folder,
        r"vision.onnx: image_features has shape \['images', 49, 2048\], "
        r"and config.json's model needs \['any', 49, 512\]$",
    )
    rewrite_onnx_config(folder, lambda exported: exported.update(vision_trunk_id="resnet152:" + own.split(":")[1]))
    assert_refused(
        folder,
        r"onnx_config.json: vision_trunk_id must be config.json's vision_backbone and a digest \('vgg16:...'\), "
        r"got 'resnet152:",
    )


@needs_onnxruntime
def test_the_vision_graph_records_its_trunk_and_older_exports_without_the_record_still_load(image_export, tmp_path):
    import onnx
    import onnxruntime

    eager, exported = image_export
    recorded = onnxruntime.InferenceSession(
        str(exported / "vision.onnx"), providers=["CPUExecutionProvider"]
    ).get_modelmeta()
    assert recorded.custom_metadata_map[TRUNK_ID_KEY] == eager.model.vision_trunk_id()
    folder = copied(exported, tmp_path)
    graph = onnx.load(str(folder / "vision.onnx"))
    del graph.metadata_props[:]  # as acn-export wrote it before the record
    onnx.save(graph, str(folder / "vision.onnx"))
    model = AcnOnnxModel(folder)
    pixels = eager.processor.image_processor(images=[striped_image()], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(model.get_image_features(pixels), AcnOnnxModel(exported).get_image_features(pixels))


# --- label counts -----------------------------------------------------------------------------------------------


@pytest.mark.bad_input(
    "a config.json with 20,000 labels (or `num_labels` of a billion)",
    f"`ValueError` naming the count and MAX_LABELS={MAX_LABELS}, before anything is allocated per label "
    "(3.5 GB went to the BIO table and the CRF)",
)
def test_more_labels_than_max_labels_are_refused_naming_the_count(tmp_path):
    config = AcnConfig(**TINY_SIZES, id2label=dict(enumerate(BIO_LABELS))).to_dict()
    config["id2label"] = {str(index): f"B-T{index}" for index in range(20000)}
    config["label2id"] = {f"B-T{index}": index for index in range(20000)}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"id2label gives 20000 labels; a model has at most MAX_LABELS={MAX_LABELS}"):
        AcnConfig.from_pretrained(tmp_path)  # the first thing a model's from_pretrained builds
    with pytest.raises(
        ValueError, match=rf"num_labels gives 1000000000 labels; a model has at most MAX_LABELS={MAX_LABELS}"
    ):
        AcnConfig(num_labels=10**9)
    with pytest.raises(ValueError, match=r"num_labels must be an integer, got '9'"):
        AcnConfig(num_labels="9")
    assert (
        AcnConfig(**TINY_SIZES, id2label={index: f"B-T{index}" for index in range(MAX_LABELS)}).num_labels == MAX_LABELS
    )


# --- the command ------------------------------------------------------------------------------------------------


@pytest.mark.slow
@needs_onnxruntime
@pytest.mark.bad_input(
    "`acn-predict --backend onnxruntime` on an ONNX folder with NaN CRF scores",
    "one line, `predict.py: error: ...` naming `onnx_config.json`, exit status 2; no traceback",
)
def test_acn_predict_on_a_corrupted_onnx_folder_ends_in_one_line(text_export, tmp_path):
    folder = copied(text_export[1], tmp_path)
    rewrite_onnx_config(folder, lambda exported: exported["crf"]["end_transitions"].__setitem__(0, float("nan")))
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"text": TWEETS[1]}) + "\n")
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "acn_mner.predict",
            "--model",
            str(folder),
            "--backend",
            "onnxruntime",
            "--input",
            str(rows),
            "--output",
            str(tmp_path / "out.jsonl"),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert finished.returncode == 2, finished.stderr[-2000:]
    last = finished.stderr.strip().splitlines()[-1]
    assert last.startswith("predict.py: error: ") and "onnx_config.json: crf end_transitions holds 1 NaN" in last, (
        finished.stderr[-2000:]
    )
    assert "Traceback" not in finished.stderr
