"""ONNX export and the ONNX Runtime backend: the numpy CRF against the torch one, `acn-export`, and the pipeline on
the exported graphs against the eager pipeline (float32: the same tags, logits within 1e-4; int8: most tags)."""

import itertools
import json
import sys
from importlib.util import find_spec

import numpy as np
import pytest
import torch

from acn_mner.onnx_export import cli, export_onnx, main
from modeling_acn import AcnCrf, AcnPipeline
from modeling_acn.onnx_runtime_acn import (
    ONNX_CONFIG_FILE,
    ONNX_INT8_FILE,
    AcnNumpyCrf,
    AcnOnnxModel,
    import_onnxruntime,
)
from modeling_acn.pipeline_acn import tag_marginals

from .encoder_fixtures import make_model, make_processor
from .pipeline_fixtures import TWEET, striped_image

needs_onnxruntime = pytest.mark.skipif(
    find_spec("onnxruntime") is None or find_spec("onnxscript") is None,
    reason="ONNX export and runtime need onnxruntime and onnxscript (pip install onnxruntime onnxscript)",
)
TWEETS = [
    TWEET,
    "Obama visits Paris",
    "Merkel meets @user in Berlin http://t.co/x",
    "RT @CNN : Macron and Merkel meet in Brussels today #EU",
    "hi",
    "Paris",
    "Watching the Lakers beat the Celtics at Staples Center with @jack and Sarah",
    "London Paris Berlin Rome Madrid Lisbon Vienna Prague Warsaw Oslo",
    "new album from Taylor Swift out now !!! 🎶🎶",
    "@user @user @user lol",
]
INT8_MIN_AGREEMENT = 0.8  # share of words whose int8 tag equals float32's (a tiny random model: near-tied scores)


# --- the numpy CRF -----------------------------------------------------------------------------------------------


class _TorchCrfModel:
    """What `tag_marginals` reads of a model: its CRF."""

    def __init__(self, crf):
        self.crf = crf


@pytest.fixture
def crfs():
    torch.manual_seed(0)
    crf = AcnCrf(5)
    for parameter in crf.parameters():
        torch.nn.init.normal_(parameter)
    tables = (crf.start_transitions, crf.end_transitions, crf.transitions)
    return crf, AcnNumpyCrf(*(table.detach().numpy() for table in tables))


@pytest.fixture
def emissions():
    generator = torch.Generator().manual_seed(1)
    lengths = torch.tensor([6, 1, 3, 2, 6])
    mask = torch.arange(6)[None, :] < lengths[:, None]  # (batch, seq_len)
    return 3 * torch.randn(len(lengths), 6, 5, generator=generator), mask  # (batch, seq_len, tags)


def test_numpy_marginals_equal_the_torch_ones(crfs, emissions):
    torch_crf, numpy_crf = crfs
    logits, mask = emissions
    expected = tag_marginals(_TorchCrfModel(torch_crf), logits, mask)  # autograd of the log-partition
    got = numpy_crf.marginals(logits.numpy(), mask.numpy())
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(got.sum(-1), mask.float().numpy(), atol=1e-5)  # a distribution per word, 0 at padding
    torch.testing.assert_close(tag_marginals(_TorchCrfModel(numpy_crf), logits, mask), expected, rtol=0, atol=1e-5)


def test_numpy_log_partition_and_decoding_equal_the_torch_ones(crfs, emissions):
    torch_crf, numpy_crf = crfs
    logits, mask = emissions
    with torch.no_grad():
        expected = torch_crf.log_partition(logits, mask)
    np.testing.assert_allclose(
        numpy_crf.log_partition(logits.numpy(), mask.numpy()), expected.numpy(), rtol=1e-6, atol=1e-5
    )
    allowed = torch.rand(5, 5, generator=torch.Generator().manual_seed(2)) > 0.3
    for constraints in ((None, None), (allowed, torch.tensor([True, True, False, True, False]))):
        assert torch.equal(
            numpy_crf.decode(logits.numpy(), mask.numpy(), *constraints), torch_crf.decode(logits, mask, *constraints)
        )


def test_a_missing_onnxruntime_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    with pytest.raises(ImportError, match="pip install onnxruntime"):
        import_onnxruntime()


# --- export and the ONNX Runtime backend ------------------------------------------------------------------------
# the fixtures `text_export` and `image_export` (conftest.py) are tiny pipelines, saved and exported


def assert_same_results(eager, onnx, inputs, **call):
    expected, got = eager(inputs, return_tags=True, **call), onnx(inputs, return_tags=True, **call)
    assert [item["tags"] for item in got] == [item["tags"] for item in expected]
    without_scores = [[{**entity, "score": None} for entity in item["entities"]] for item in (*got, *expected)]
    assert without_scores[: len(got)] == without_scores[len(got) :]
    np.testing.assert_allclose(
        np.concatenate([item["scores"] for item in got]),
        np.concatenate([item["scores"] for item in expected]),
        atol=1e-4,
    )


@needs_onnxruntime
def test_the_exported_folder_is_self_contained(text_export):
    _, exported = text_export
    names = {path.name for path in exported.iterdir()}
    assert {
        "model.onnx",
        "model_int8.onnx",
        ONNX_CONFIG_FILE,
        "config.json",
        "processor_config.json",
        "vocab.json",
    } <= names
    assert "model.safetensors" not in names
    assert json.loads((exported / ONNX_CONFIG_FILE).read_text())["exporter"] == "torch.onnx.export(dynamo=True)"


@needs_onnxruntime
def test_float32_onnx_tags_like_eager(text_export):
    eager, exported = text_export
    onnx = AcnPipeline.from_pretrained(exported, backend="onnxruntime")
    assert_same_results(eager, onnx, TWEETS, batch_size=4)
    assert_same_results(eager, onnx, TWEETS[:3], batch_size=1)
    inputs = eager.processor(TWEETS)
    with torch.no_grad():
        expected = eager.model(**inputs).logits
    torch.testing.assert_close(onnx.model(**inputs).logits, expected, rtol=0, atol=1e-4)


@needs_onnxruntime
def test_int8_onnx_runs_and_mostly_agrees(text_export):
    eager, exported = text_export
    onnx = AcnPipeline.from_pretrained(exported, backend="onnxruntime", onnx_file=ONNX_INT8_FILE)
    expected = [tag for item in eager(TWEETS, return_tags=True) for tag in item["tags"]]
    got = [tag for item in onnx(TWEETS, return_tags=True, batch_size=4) for tag in item["tags"]]
    agreement = np.mean([a == b for a, b in zip(got, expected, strict=True)])
    print(f"int8 tags equal to float32's: {agreement:.1%} of {len(expected)} words")
    assert len(got) == len(expected) and agreement >= INT8_MIN_AGREEMENT


@needs_onnxruntime
def test_images_as_features_and_as_pictures_tag_like_eager(image_export):
    eager, exported = image_export
    onnx = AcnPipeline.from_pretrained(exported, backend="onnxruntime")
    features = np.random.default_rng(0).random((49, 512), dtype=np.float32) * 3
    inputs = [(TWEETS[0], features), (TWEETS[1], None), (TWEETS[2], striped_image()), TWEETS[3]]
    assert_same_results(eager, onnx, inputs, batch_size=4)
    batch = dict(eager.processor(["Obama visits Paris"]), image_features=torch.rand(1, 49, 512))
    assert onnx.model.vision_trunk_id() == eager.model.vision_trunk_id()
    with pytest.raises(ValueError, match="image_features were computed by the vision trunk vgg16:0123456789ab"):
        onnx.model(**batch, image_features_trunk="vgg16:" + "0123456789ab" * 4)


@needs_onnxruntime
def test_the_onnx_model_refuses_what_the_torch_model_refuses(text_export):
    eager, exported = text_export
    model = AcnOnnxModel(exported)
    inputs = dict(eager.processor(["Obama visits Paris", "hi"]))
    inputs["attention_mask"] = torch.tensor([[1, 1, 1], [0, 0, 1]])
    with pytest.raises(ValueError, match="attention_mask must be left-aligned"):
        model(**inputs)
    inputs["attention_mask"] = torch.tensor([[1, 1, 1], [0, 0, 0]])
    with pytest.raises(ValueError, match=r"every tweet needs at least one word, got lengths \[3, 0\]"):
        model(**inputs)
    del inputs["char_ids"]
    with pytest.raises(ValueError, match="char_ids are required"):
        model(**inputs)
    with pytest.raises(ValueError, match="output_attentions needs the torch backend"):
        eager_inputs = dict(eager.processor(["hi"]))
        model(**eager_inputs, output_attentions=True)
    with pytest.raises(ValueError, match="backend must be one of"):
        AcnPipeline.from_pretrained(exported, backend="tensorrt")


@needs_onnxruntime
def test_acn_export_refuses_to_write_over_the_model_or_other_files(text_export, tmp_path, capsys):
    eager, _ = text_export
    folder = tmp_path / "model"
    eager.save_pretrained(folder)
    with pytest.raises(SystemExit):
        cli(["--model", str(folder), "--output_dir", str(folder)])
    assert "is the model folder" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit):
        cli(["--model", str(folder), "--output_dir", str(tmp_path / "other")])
    assert "not an ACN ONNX export" in capsys.readouterr().err
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


@needs_onnxruntime
def test_acn_on_a_pretrained_encoder_runs_in_onnx_like_eager(tiny_bert, tmp_path):
    processor = make_processor(tiny_bert)
    model = make_model(tiny_bert, processor, use_image=False)
    exported = export_onnx(model, tmp_path / "onnx", processor=processor)
    eager = AcnPipeline(model=model, processor=processor, device="cpu")
    onnx = AcnPipeline.from_pretrained(exported, backend="onnxruntime")
    short = [
        tweet for tweet in TWEETS if len(processor([tweet])["subword_ids"][0]) <= processor.tokenizer.subword_window
    ]
    assert_same_results(eager, onnx, short, batch_size=4)
    with pytest.raises(ValueError, match="tag longer tweets with the torch backend"):
        onnx(TWEETS[6])


def test_lstm_word_pooling_is_refused_by_the_export_with_the_reason(tiny_bert, tmp_path):
    processor = make_processor(tiny_bert)
    model = make_model(tiny_bert, processor, use_image=False, word_pooling="lstm")
    with pytest.raises(ValueError, match="word_pooling='lstm' cannot be exported"):
        export_onnx(model, tmp_path / "onnx", processor=processor)
    assert not (tmp_path / "onnx").exists()


def test_acn_predict_runs_the_onnx_folder_like_eager(text_export, tmp_path):
    import json

    from acn_mner import predict

    pipe, exported = text_export
    pipe.save_pretrained(tmp_path / "model")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(json.dumps({"text": text}) + "\n" for text in ("Obama visits Paris", "Merkel meets @user in Berlin"))
    )
    for backend, name in (("torch", None), ("onnxruntime", "model.onnx"), ("onnxruntime", "model_int8.onnx")):
        extra = ["--backend", backend] + (["--onnx_file", name] if name else [])
        model = str(tmp_path / "model") if backend == "torch" else str(exported)
        predict.main(
            [
                "--model",
                model,
                "--input",
                str(rows),
                "--output",
                str(tmp_path / f"{backend}-{name}.jsonl"),
                "--device",
                "cpu",
                *extra,
            ]
        )
    lines = {
        path.name: [json.loads(line)["tags"] for line in path.read_text().splitlines()]
        for path in tmp_path.glob("*.jsonl")
        if path.name != "rows.jsonl"
    }
    assert lines["onnxruntime-model.onnx.jsonl"] == lines["torch-None.jsonl"]
    assert len(lines["onnxruntime-model_int8.onnx.jsonl"]) == 2


@needs_onnxruntime
def test_static_int8_image_trunk_is_calibrated_on_the_folders_images(image_export, tmp_path):
    """acn-export --int8 --calibration_images: vision_int8.onnx (QDQ) gives features close to vision.onnx's, and the
    pipeline and acn-predict run it when asked; without --int8 the flag is refused."""
    eager, exported = image_export
    model_folder = next(path for path in exported.parent.iterdir() if path.name.startswith("image-model"))
    images = tmp_path / "calibration"
    images.mkdir()
    for number in range(5):
        striped_image((64 + 16 * number, 48)).rotate(30 * number, expand=True).save(images / f"{number}.jpg")
    output = tmp_path / "int8-onnx"
    assert (
        main(["--model", str(model_folder), "--output_dir", str(output), "--int8", "--calibration_images", str(images)])
        is None
    )
    assert "vision_int8.onnx" in json.loads((output / "onnx_config.json").read_text())["graphs"]
    float32 = AcnPipeline.from_pretrained(output, backend="onnxruntime")
    int8 = AcnPipeline.from_pretrained(output, backend="onnxruntime", vision_onnx_file="vision_int8.onnx")
    assert int8.model.vision_onnx_file == "vision_int8.onnx"
    pixels = eager.processor.image_processor(
        images=[striped_image((90, 60)), striped_image((50, 70))], return_tensors="pt"
    )["pixel_values"]
    expected, got = float32.model.get_image_features(pixels), int8.model.get_image_features(pixels)
    assert got.shape == expected.shape and not torch.equal(got, expected)  # a different graph ran
    relative = (got - expected).norm() / expected.norm()
    print(f"int8 trunk features: relative error {relative:.3f}")
    assert relative < 0.1
    inputs = [(TWEETS[0], striped_image()), TWEETS[1]]
    tagged, reference = int8(inputs, return_tags=True), float32(inputs, return_tags=True)
    assert [item["words"] for item in tagged] == [item["words"] for item in reference]
    with pytest.raises(SystemExit):
        main(["--model", str(model_folder), "--output_dir", str(tmp_path / "no"), "--calibration_images", str(images)])
    with pytest.raises(ValueError, match="has no vision_int8.onnx"):
        AcnPipeline.from_pretrained(exported, backend="onnxruntime", vision_onnx_file="vision_int8.onnx")


def _brute_force(numpy_crf, emissions, length, allowed=None, allowed_start=None):
    """The best path (under the constraints) and the marginals of one sequence, by enumerating every tag path."""
    num_tags = emissions.shape[-1]
    paths = np.array(list(itertools.product(range(num_tags), repeat=length)))  # (paths, length)
    scores = numpy_crf.start_transitions.astype(np.float64)[paths[:, 0]] + numpy_crf.end_transitions[paths[:, -1]]
    scores = scores + emissions[np.arange(length), paths].sum(-1)  # (paths,)
    scores = scores + numpy_crf.transitions.astype(np.float64)[paths[:, :-1], paths[:, 1:]].sum(-1)
    probabilities = np.exp(scores - scores.max())
    probabilities /= probabilities.sum()
    marginals = np.zeros((length, num_tags))
    for position in range(length):
        np.add.at(marginals[position], paths[:, position], probabilities)
    valid = np.ones(len(paths), dtype=bool)
    if allowed is not None:
        valid = allowed_start[paths[:, 0]] & allowed[paths[:, :-1], paths[:, 1:]].all(-1)
    best = paths[np.flatnonzero(valid)[np.argmax(scores[valid])]]
    return best, marginals


@pytest.mark.parametrize("batch", range(1, 9))
def test_numpy_decoding_and_marginals_match_enumeration_and_torch_on_ragged_batches(batch):
    """The numpy CRF (Viterbi on per-model tables, marginals by scaled forward-backward) against every path
    enumerated and against `AcnCrf`, on random scores with ragged lengths, constrained and not."""
    rng = np.random.default_rng(batch)
    num_tags, seq_len = 4, 5
    tables = [rng.normal(0, 2, shape).astype(np.float32) for shape in ((num_tags,), (num_tags,), (num_tags,) * 2)]
    numpy_crf = AcnNumpyCrf(*tables)
    torch_crf = AcnCrf(num_tags)
    with torch.no_grad():
        for parameter, table in zip(
            (torch_crf.start_transitions, torch_crf.end_transitions, torch_crf.transitions), tables, strict=True
        ):
            parameter.copy_(torch.from_numpy(table))
    lengths = rng.integers(1, seq_len + 1, size=batch)
    lengths[0] = seq_len if batch > 1 else lengths[0]  # the batch's width is its longest sequence
    mask = np.arange(lengths.max())[None, :] < lengths[:, None]  # (batch, seq_len)
    emissions = (3 * rng.normal(size=(batch, int(lengths.max()), num_tags))).astype(np.float32)
    allowed, allowed_start = rng.random((num_tags, num_tags)) > 0.3, np.array([True, False, True, False])
    marginals = numpy_crf.marginals(emissions, mask)  # (batch, seq_len, tags)
    paths = numpy_crf.decode_numpy(emissions, mask)  # (batch, seq_len)
    constrained = numpy_crf.decode_numpy(emissions, mask, allowed, allowed_start)
    for row, length in enumerate(lengths):
        best, expected_marginals = _brute_force(numpy_crf, emissions[row, :length], length)
        best_constrained, _ = _brute_force(numpy_crf, emissions[row, :length], length, allowed, allowed_start)
        assert paths[row, :length].tolist() == best.tolist()
        assert constrained[row, :length].tolist() == best_constrained.tolist()
        assert (paths[row, length:] == -100).all() and (marginals[row, length:] == 0).all()
        np.testing.assert_allclose(marginals[row, :length], expected_marginals, atol=1e-5)
    torch_mask = torch.from_numpy(mask)
    for constraints in ((None, None), (torch.from_numpy(allowed), torch.from_numpy(allowed_start))):
        torch_paths = torch_crf.decode(torch.from_numpy(emissions), torch_mask, *constraints)
        assert torch.equal(numpy_crf.decode(emissions, mask, *constraints), torch_paths)
    expected = tag_marginals(_TorchCrfModel(torch_crf), torch.from_numpy(emissions), torch_mask)
    np.testing.assert_allclose(marginals, expected.numpy(), atol=1e-5)


def test_numpy_marginals_of_extreme_crf_scores_fall_back_to_log_space(emissions):
    """CRF scores spread wider than exp's float64 range (+-400; float32 autograd in torch gives NaN there): the
    marginals (the log-space recursion) still match every path enumerated, with no NaN."""
    logits, mask = emissions
    rng = np.random.default_rng(0)
    tables = [400 * rng.choice([-1.0, 1.0], size=shape).astype(np.float32) for shape in ((5,), (5,), (5, 5))]
    numpy_crf = AcnNumpyCrf(*tables)
    got = numpy_crf.marginals(logits.numpy(), mask.numpy())  # (batch, seq_len, tags)
    for row, length in enumerate(mask.sum(-1).tolist()):
        _, expected = _brute_force(numpy_crf, logits[row, :length].double().numpy(), length)
        np.testing.assert_allclose(got[row, :length], expected, atol=1e-5)
    assert (got[~mask.numpy()] == 0).all()


@needs_onnxruntime
def test_the_onnx_pipeline_skips_the_device_walk_and_still_tags_like_eager(text_export, monkeypatch):
    """The ONNX backend runs on the CPU only: `AcnPipeline.forward` skips transformers' walk that moves every input
    and output to the device (issue 38), and one-tweet calls skip the length groups, with the same results."""
    eager, exported = text_export
    onnx = AcnPipeline.from_pretrained(exported, backend="onnxruntime")
    expected = [eager(tweet, return_tags=True) for tweet in TWEETS]

    def walk(*args, **kwargs):
        raise AssertionError("the ONNX backend walked its tensors to the device")

    monkeypatch.setattr(onnx, "_ensure_tensor_on_device", walk)
    for tweet, want in zip(TWEETS, expected, strict=True):
        got = onnx(tweet, return_tags=True)
        assert got["tags"] == want["tags"]
        assert [{**entity, "score": None} for entity in got["entities"]] == [
            {**entity, "score": None} for entity in want["entities"]
        ]
        np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-4)
    assert_same_results(eager, onnx, TWEETS, batch_size=4)
