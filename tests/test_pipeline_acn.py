"""AcnPipeline (the multimodal-ner pipeline): output schema and offsets, entity grouping, batching, features or
pixels or no image, logits computed in groups of tweets of similar lengths, CRF marginals against enumeration,
errors, and loading saved folders in this and a fresh process."""

import itertools
import json
import os
import random
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForTokenClassification, pipeline

from modeling_acn import AcnPipeline, AcnTokenizer, pipeline_acn
from modeling_acn.pipeline_acn import entity_spans, grouped_entities, length_groups, tag_marginals
from modeling_acn.vision_acn import supports_bf16
from tests.encoder_fixtures import make_model, make_processor
from tests.pipeline_fixtures import TWEET, striped_image, tiny_pipeline


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def saved_folder(pipe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("acn") / "model"
    pipe.save_pretrained(folder)
    return folder


def comparable(result):
    """Pipeline results with scores rounded, so that batched and single runs compare exactly."""
    return json.loads(json.dumps(result), parse_float=lambda value: round(float(value), 5))


def favour_one_person(pipe):
    """Emissions that make the whole tweet one PER entity: I-PER scores best, B-PER must open it."""
    model = pipe.model
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 4.0, 5.0, 0.0, 0.0]))  # O B-PER I-PER B-LOC I-LOC


def test_word_output_schema_and_offsets_on_tweet_text(pipe):
    words, offsets = AcnTokenizer.split_text(TWEET)
    result = pipe(TWEET, image=None, aggregation_strategy="none", ignore_labels=[])
    assert [entry["word"] for entry in result] == words
    for index, entry in enumerate(result):
        assert set(entry) == {"entity", "score", "index", "word", "start", "end"}
        assert entry["index"] == index and (entry["start"], entry["end"]) == offsets[index]
        assert TWEET[entry["start"] : entry["end"]] == entry["word"]
        assert entry["entity"] in pipe.model.config.label2id and 0.0 < entry["score"] <= 1.0
    assert {entry["word"] for entry in result} >= {"@Obama", "🇫🇷", "http://t.co/xyz", "!!"}


def test_entities_span_the_original_text(pipe):
    pipe = tiny_pipeline()
    favour_one_person(pipe)
    (entity,) = pipe(TWEET, image=None)
    assert set(entity) == {"entity_group", "score", "word", "start", "end"}
    assert entity["entity_group"] == "PER"
    assert entity["word"] == TWEET[entity["start"] : entity["end"]] == TWEET  # first word to last, spaces kept
    detail = pipe(TWEET, image=None, return_tags=True)
    assert detail["tags"] == ["B-PER"] + ["I-PER"] * (len(detail["words"]) - 1)
    assert entity["score"] == pytest.approx(sum(detail["scores"]) / len(detail["scores"]))
    assert pipe(TWEET, image=None, ignore_labels=["PER"]) == []


def test_grouping_follows_bio_spans():
    tags = ["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC", "I-PER"]
    assert entity_spans(tags) == [("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 5), ("PER", 6, 6)]
    text = "Ann  Lee in Rome Paris  Nord Bo"
    offsets = [(0, 3), (5, 8), (9, 11), (12, 16), (17, 22), (24, 28), (29, 31)]
    groups = grouped_entities(text, tags, [0.5, 0.7, 1.0, 0.2, 0.4, 0.6, 0.9], offsets, {"O"})
    assert [(g["entity_group"], g["word"], g["start"], g["end"]) for g in groups] == [
        ("PER", "Ann  Lee", 0, 8),
        ("LOC", "Rome", 12, 16),
        ("LOC", "Paris  Nord", 17, 28),
        ("PER", "Bo", 29, 31),
    ]
    assert groups[0]["score"] == pytest.approx(0.6)


def test_a_batch_gives_the_same_results_as_single_calls(pipe, tmp_path):
    image_path = tmp_path / "stripes.png"
    striped_image().save(image_path)
    features = pipe.model.get_image_features(pipe.processor.image_processor(striped_image())["pixel_values"])[0]
    inputs = [
        (TWEET, striped_image()),
        "Merkel meets Obama",
        {"text": "Paris  in the rain", "image": str(image_path)},
        ("Berlin", None),
        ("Obama visits Paris", features.detach()),
    ]
    single = [comparable(pipe(item, return_tags=True)) for item in inputs]
    batched = [comparable(result) for result in pipe(inputs, batch_size=3, return_tags=True)]
    assert batched == single
    streamed = [comparable(result) for result in pipe((item for item in inputs), batch_size=2, return_tags=True)]
    assert streamed == single


def all_splits(items):
    """Every way to cut a sequence into contiguous non-empty groups."""
    for cuts in itertools.product((False, True), repeat=max(len(items) - 1, 0)):
        groups, start = [], 0
        for place, cut in enumerate(cuts, start=1):
            if cut:
                groups.append(items[start:place])
                start = place
        yield groups + [items[start:]]


@pytest.mark.parametrize("seed", range(30))
def test_length_groups_find_the_cheapest_split_of_the_sorted_batch(seed):
    generator = random.Random(seed)
    lengths = [generator.randint(1, 40) for _ in range(generator.randint(1, 8))]
    group_cost = generator.choice([0, 5, 20, 1000])

    def cost(groups):
        return sum(len(rows) * max(lengths[row] for row in rows) + group_cost for rows in groups)

    groups = length_groups(lengths, group_cost)
    assert sorted(row for rows in groups for row in rows) == list(range(len(lengths)))  # each row once
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    brute_force = min(cost(split) for split in all_splits(order))  # the sorted order's every split
    assert cost(groups) == brute_force
    if group_cost == 1000:
        assert len(groups) == 1


def grouped_and_whole_results(pipe, inputs, monkeypatch):
    """The pipeline's results for `inputs` as one batch whose logits are computed in length groups (a group per
    length), the same with the logits of the whole batch in one call, and the shapes `(tweets, words, characters)`
    of the grouped model calls."""
    calls = []
    forward = pipe.model.forward
    monkeypatch.setattr(
        pipe.model, "forward", lambda **inputs: calls.append(inputs["char_ids"].shape) or forward(**inputs)
    )
    monkeypatch.setattr(pipeline_acn, "GROUP_COST", 0)
    grouped = pipe(inputs, batch_size=len(inputs), return_tags=True)
    grouped_calls = calls[:]
    monkeypatch.setattr(pipeline_acn, "GROUP_COST", 10**9)  # more than any padding costs: one group
    calls.clear()
    whole = pipe(inputs, batch_size=len(inputs), return_tags=True)
    (whole_call,) = calls
    assert min(shape[2] for shape in grouped_calls) < whole_call[2]  # a group of short words: fewer characters
    return grouped, whole, grouped_calls


def assert_same_tags_and_scores(results, expected):
    assert [item["tags"] for item in results] == [item["tags"] for item in expected]
    scores, expected_scores = (torch.tensor([s for item in run for s in item["scores"]]) for run in (results, expected))
    torch.testing.assert_close(scores, expected_scores, atol=1e-5, rtol=0)


@pytest.mark.parametrize("use_image", [False, True])
def test_logits_in_length_groups_give_the_whole_batchs_results(use_image, monkeypatch):
    pipe = tiny_pipeline(use_image=use_image)
    inputs = [
        ("Obama visits Paris", None),
        (TWEET, striped_image()),
        ("Berlin", None),
        ("Merkel meets Obama in Paris today", striped_image()),
    ]
    grouped, whole, calls = grouped_and_whole_results(pipe, inputs, monkeypatch)
    assert len(calls) == 4 and sorted(shape[1] for shape in calls) == [1, 3, 6, len(AcnTokenizer.split_text(TWEET)[0])]
    assert_same_tags_and_scores(grouped, whole)


def test_length_groups_trim_the_subword_axis(tiny_bert, monkeypatch):
    processor = make_processor(tiny_bert)
    pipe = AcnPipeline(model=make_model(tiny_bert, processor, use_image=False), processor=processor, device="cpu")
    inputs = [("Obama visits Paris",), ("Berlin",), ("Merkel meets Obama in Paris http://t.co/x #news",)]
    grouped, whole, calls = grouped_and_whole_results(pipe, [(*item, None) for item in inputs], monkeypatch)
    assert len(calls) == 3
    assert_same_tags_and_scores(grouped, whole)
    batch = pipe([text for (text,) in inputs], batch_size=3, return_tags=True)
    assert [comparable(result) for result in batch] == [comparable(pipe(text, return_tags=True)) for (text,) in inputs]


def test_datasets_and_other_iterables_give_the_results_of_single_calls(pipe, tmp_path):
    from datasets import Dataset
    from transformers.pipelines.pt_utils import KeyDataset

    image_path = tmp_path / "stripes.png"
    striped_image().save(image_path)
    texts = [TWEET, "Merkel meets Obama", "Paris  in the rain", "Berlin"]
    images = [str(image_path), None, str(image_path), None]
    rows = Dataset.from_dict({"text": texts, "image": images})  # iterating it gives {"text", "image"} dicts
    single = [comparable(pipe(text, image=image, return_tags=True)) for text, image in zip(texts, images, strict=True)]
    text_only = [comparable(pipe(text, return_tags=True)) for text in texts]
    sources = {
        "KeyDataset": (lambda: KeyDataset(rows, "text"), text_only),  # a torch Dataset, as transformers' docs use
        "datasets.Dataset": (lambda: rows, single),
        "iterator": (lambda: iter(texts), text_only),
        "zip of pairs": (lambda: zip(texts, images, strict=True), single),
    }
    for name, (make_inputs, expected) in sources.items():
        for batch_size in (1, 3):
            results = pipe(make_inputs(), batch_size=batch_size, return_tags=True)
            assert not isinstance(results, list), name  # streamed, as transformers streams datasets and generators
            assert [comparable(result) for result in results] == expected, (name, batch_size)


def test_images_keyword_of_transformers_multimodal_pipelines_is_image(pipe):
    """`images=`, as transformers' multimodal pipelines and the processor name it: one tweet's image, or one image per
    tweet of a list."""
    picture = striped_image()
    expected = comparable(pipe("Obama visits Paris", image=picture, return_tags=True))
    assert comparable(pipe("Obama visits Paris", images=picture, return_tags=True)) == expected
    texts, images = ["Obama visits Paris", "Merkel meets Obama"], [picture, None]
    paired = comparable(pipe(list(zip(texts, images, strict=True)), return_tags=True))
    assert comparable(pipe(texts, images=images, return_tags=True)) == paired
    assert paired[0] == expected and paired[1] == comparable(pipe(texts[1], return_tags=True))
    words = ["Obama", "visits", "Paris"]
    assert comparable(pipe(words, images=picture, is_split_into_words=True, return_tags=True)) == expected
    with pytest.raises(ValueError, match="give the image as image= or as images=, not both"):
        pipe("Obama", image=picture, images=picture)
    with pytest.raises(ValueError, match="got 1 images for 2 tweets; give a list with None for no image"):
        pipe(texts, images=[picture])
    with pytest.raises(ValueError, match="give the image either inside the pair or dict or as image=, not both"):
        pipe([("Obama", None)], images=[picture])


def test_precomputed_features_give_the_image_result(pipe):
    pixels = pipe.processor.image_processor(striped_image())["pixel_values"]  # (1, 3, 224, 224)
    features = pipe.model.get_image_features(pixels)[0].detach().numpy()  # (49, 512)
    from_image = pipe("Obama visits Paris", image=striped_image(), return_tags=True)
    from_features = pipe(("Obama visits Paris", features), return_tags=True)
    assert comparable(from_features) == comparable(from_image)


def test_none_image_takes_the_text_path(pipe):
    text = "Merkel meets Obama in Berlin"
    result = pipe(text, image=None, return_tags=True, output_attentions=True)
    inputs = pipe.processor(text)
    with torch.no_grad():
        logits = pipe.model(**inputs).logits  # no image inputs at all: the model's text path
    expected = pipe.model.decode(logits, inputs["attention_mask"], constrain_bio=True)[0]
    assert result["tags"] == [pipe.model.config.id2label[tag] for tag in expected]
    assert result["filtration_gates"].tolist() == [0.0] * 5
    assert result["visual_attentions"].shape == (5, 7, 7)


def test_words_input_has_offsets_in_the_joined_words(pipe):
    words = ["Obama", "visits", "Paris", "🇫🇷"]
    result = pipe(words, is_split_into_words=True, aggregation_strategy="none", ignore_labels=[])
    assert [(entry["word"], entry["start"], entry["end"]) for entry in result] == [
        ("Obama", 0, 5),
        ("visits", 6, 12),
        ("Paris", 13, 18),
        ("🇫🇷", 19, 21),
    ]
    batch = pipe([words, ["Berlin"]], is_split_into_words=True, return_tags=True)
    assert [item["words"] for item in batch] == [words, ["Berlin"]]


def test_scores_are_crf_marginals_by_enumeration(pipe):
    model = pipe.model
    logits = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(3))  # (batch, seq_len, tags)
    word_mask = torch.tensor([[True, True, True], [True, True, False]])
    marginals = tag_marginals(model, logits, word_mask)  # (batch, seq_len, tags)
    for row, length in enumerate((3, 2)):
        expected = torch.zeros(3, 5)
        for path in itertools.product(range(5), repeat=length):
            tags = torch.tensor([list(path) + [0] * (3 - length)])  # (1, seq_len)
            with torch.no_grad():
                probability = model.crf.log_likelihood(logits[row : row + 1], tags, word_mask[row : row + 1]).exp()
            expected[torch.arange(length), torch.tensor(path)] += probability[0]
        assert torch.allclose(marginals[row], expected, atol=1e-5)


def test_softmax_decoder_scores_are_softmax_probabilities():
    pipe = tiny_pipeline(decoder="softmax", use_image=False)
    result = pipe("Obama visits Paris", return_tags=True)
    inputs = pipe.processor("Obama visits Paris")
    with torch.no_grad():
        probabilities = pipe.model(**inputs).logits.softmax(-1)[0]  # (seq_len, tags)
    label2id = pipe.model.config.label2id
    expected = [probabilities[index, label2id[tag]].item() for index, tag in enumerate(result["tags"])]
    assert result["scores"] == pytest.approx(expected)


def test_pipeline_errors_name_the_bad_value(pipe):
    with pytest.raises(ValueError, match="aggregation_strategy must be 'none' or 'simple'.*got 'first'"):
        pipe("Obama", aggregation_strategy="first")
    with pytest.raises(ValueError, match="image= goes with a single tweet"):
        pipe(["Obama", "Paris"], image=striped_image())
    with pytest.raises(ValueError, match="give the image either inside the pair or dict or as image=, not both"):
        pipe(("Obama", None), image=striped_image())
    with pytest.raises(ValueError, match=r"expected a tweet, a \(text, image\) pair or a dict with 'text', got 3"):
        pipe(["Obama", 3])
    with pytest.raises(ValueError, match=r"image features must be a float tensor of shape \(49, 512\), got "):
        pipe(("Obama", torch.zeros(7, 512)))
    with pytest.raises(ValueError, match="example 0 has no words"):
        pipe("   ")
    with pytest.raises(ValueError, match="output_attentions=True needs a model with images"):
        tiny_pipeline(use_image=False)("Obama", output_attentions=True)


def test_from_pretrained_loads_a_saved_folder(pipe, saved_folder):
    loaded = AcnPipeline.from_pretrained(saved_folder, device="cpu")
    assert loaded.device == torch.device("cpu")
    inputs = [(TWEET, striped_image()), ("Merkel meets Obama", None)]
    assert comparable(loaded(inputs, return_tags=True)) == comparable(pipe(inputs, return_tags=True))


FRESH_PROCESS_SCRIPT = """
import json
import sys

sys.modules["modeling_acn"] = None  # the project must not be importable: everything comes from the folder
from transformers import pipeline

folder, task, tweet = sys.argv[1], sys.argv[2], {tweet!r}
pipe = pipeline(task, model=folder, trust_remote_code=True, device="cpu")
assert type(pipe).__module__.startswith("transformers_modules."), type(pipe).__module__
print(json.dumps(pipe([tweet, (tweet, None)], batch_size=2, return_tags=True)))
"""


@pytest.fixture(scope="module")
def separately_saved_folder(pipe, tmp_path_factory):
    """What a user gets from `model.save_pretrained` and `processor.save_pretrained`, without the pipeline."""
    folder = tmp_path_factory.mktemp("acn") / "model"
    pipe.model.save_pretrained(folder)
    pipe.processor.save_pretrained(folder)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(
    "saved_by, task",
    [
        ("pipeline", "multimodal-ner"),
        ("model and processor", "multimodal-ner"),
        ("model and processor", "token-classification"),
    ],
)
def test_fresh_process_loads_the_folder_with_the_pipeline_factory(pipe, saved_by, task, request, tmp_path):
    folder = request.getfixturevalue("saved_folder" if saved_by == "pipeline" else "separately_saved_folder")
    script = tmp_path / "load.py"
    script.write_text(FRESH_PROCESS_SCRIPT.format(tweet=TWEET))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, str(script), str(folder), task], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    aggregation = "none" if task == "token-classification" else "simple"  # each task's default
    expected = pipe([TWEET, (TWEET, None)], return_tags=True, aggregation_strategy=aggregation)
    assert comparable(loaded) == comparable(expected)


def cpu_lacks_bf16(dtype) -> bool:
    return dtype == torch.bfloat16 and not supports_bf16(torch.device("cpu"))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_model_loaded_in_16_bits_runs_with_images(pipe, saved_folder, dtype):
    if cpu_lacks_bf16(dtype):
        pytest.skip("this CPU has no bf16 instructions (AVX-512 bf16 / AMX): oneDNN would emulate them very slowly")
    model = AutoModelForTokenClassification.from_pretrained(saved_folder, dtype=dtype).eval()
    inputs = pipe.processor([TWEET, "Merkel meets Obama"], images=[striped_image(), None])  # float32 pixels
    features = torch.rand(2, 49, 512, generator=torch.Generator().manual_seed(0)) * 3  # float32 features
    with torch.no_grad():
        reference = pipe.model(**inputs).logits  # (2, seq_len, 5)
        from_pixels = model(**inputs).logits
        from_features = model(**{**inputs, "pixel_values": None, "image_features": features}).logits
        reference_features = pipe.model(**{**inputs, "pixel_values": None, "image_features": features}).logits
    assert from_pixels.dtype == dtype and from_features.dtype == dtype
    scale = reference.abs().max().item()
    assert (from_pixels.float() - reference).abs().max().item() < 0.05 * scale
    assert (from_features.float() - reference_features).abs().max().item() < 0.05 * scale


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_pipeline_factory_takes_a_dtype(pipe, saved_folder, dtype):
    if cpu_lacks_bf16(dtype):
        pytest.skip("this CPU has no bf16 instructions (AVX-512 bf16 / AMX): oneDNN would emulate them very slowly")
    loaded = pipeline("multimodal-ner", model=str(saved_folder), pipeline_class=AcnPipeline, dtype=dtype, device="cpu")
    assert loaded.model.dtype == dtype
    inputs = [(TWEET, striped_image()), ("Merkel meets Obama", None)]
    ours, reference = loaded(inputs, return_tags=True), pipe(inputs, return_tags=True)
    for result, expected in zip(ours, reference, strict=True):
        assert result["tags"] == expected["tags"]
        assert result["scores"] == pytest.approx(expected["scores"], abs=0.02)


def assert_same_inputs(got, expected):
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert got[name].dtype == value.dtype and torch.equal(got[name], value), name
        else:
            assert got[name] == value, name


@pytest.mark.parametrize("use_image", [False, True])
def test_a_batch_without_images_is_preprocessed_in_one_call_as_example_by_example(tiny_bert, use_image, monkeypatch):
    """`preprocess_batch` (one processor call per batch) against the brute force: `preprocess` per tweet and
    transformers' collation; tweets over the encoder's window (pieces), invisible words, pre-split words."""
    processor = make_processor(tiny_bert)
    pipe = AcnPipeline(model=make_model(tiny_bert, processor, use_image=use_image), processor=processor, device="cpu")
    long_tweet = " ".join(["Merkel meets Obama in Paris"] * 6)  # past the 16-position window
    batches = [
        (["Obama visits Paris", TWEET, "Berlin", long_tweet, "a \u200b b"], False),
        ([["Obama", "visits", "Paris"], ["Berlin", "#news"]], True),
    ]
    calls = []
    original = type(processor).__call__

    def counted(self, *args, **kwargs):
        calls.append(args)
        return original(self, *args, **kwargs)

    for texts, split in batches:
        examples = [{"text": text, "image": None} for text in texts]
        expected = pipe.collate([pipe.preprocess(example, is_split_into_words=split) for example in examples])
        calls.clear()
        monkeypatch.setattr(type(processor), "__call__", counted)
        got = pipe.preprocess_batch(examples, is_split_into_words=split)
        monkeypatch.undo()
        assert len(calls) == 1
        assert_same_inputs(got, expected)
        if use_image:  # the inputs of tweets without an image, made without the image processor: its output for None
            made = {name: got[name] for name in ("pixel_values", "image_mask")}
            assert_same_inputs(made, dict(processor.image_processor([None] * len(texts), return_tensors="pt")))
        calls.clear()
        monkeypatch.setattr(type(processor), "__call__", counted)
        results = pipe(texts, batch_size=3, is_split_into_words=split, return_tags=True)  # through get_iterator
        monkeypatch.undo()
        assert len(calls) == -(-len(texts) // 3)  # one call per batch of 3
        assert [comparable(result) for result in results] == [
            comparable(pipe(text, is_split_into_words=split, return_tags=True)) for text in texts
        ]


def test_a_batch_the_processor_refuses_gives_the_single_tweets_message(pipe):
    with pytest.raises(ValueError, match="has no words: '   '") as single:
        pipe("   ")
    with pytest.raises(ValueError) as batched:
        pipe(["Obama visits Paris", "   ", "Berlin"], batch_size=3)
    assert str(batched.value) == str(single.value)


def test_pre_split_tweets_given_as_strings_are_refused_in_a_batch_as_alone(pipe):
    """With is_split_into_words=True a tweet is a list of words: a string there is refused, alone or in a batch (the
    processor would read a batch of strings as one tweet's words)."""
    with pytest.raises(ValueError, match="is_split_into_words=True needs a non-empty list of words, got 'Obama'"):
        pipe([{"text": "Obama"}], is_split_into_words=True, batch_size=2)
    with pytest.raises(ValueError, match="is_split_into_words=True needs a non-empty list of words, got 'Obama'"):
        pipe([{"text": "Obama"}, {"text": "Paris"}, {"text": ["Berlin"]}], is_split_into_words=True, batch_size=3)
