"""dataset_script/twitter_mner.py: parsing, labels, images, Parquet export, card and the image feature cache."""

import io
import logging
from pathlib import Path

import datasets
import pytest
import torch
from PIL import Image
from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import IOB2, Entities

from acn_mner.corpus import CorpusFormatError, ImageProblem, load_twitter_mner, parse_label_map, read_image
from acn_mner.dataset_card import count_lenient_entities, count_orphan_inside_tags, count_strict_entities, tag_sequences
from acn_mner.dataset_command import main
from acn_mner.feature_cache import VISION_WEIGHTS_FILE, cache_image_features, read_vision_settings
from acn_mner.parquet_export import export_parquet
from modeling_acn import AcnConfig, AcnImageProcessor, AcnModel
from tests.corpus_fixtures import (
    BLUE,
    FIXTURE_TWEETS,
    IMAGE_BYTES,
    RED,
    WHITE,
    corpus_text,
    write_corpus,
    write_image,
    write_images,
)

REAL_CORPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "twitter2015"
FIXTURE_LABELS = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-OTHER", "I-OTHER", "B-PER", "I-PER"]


@pytest.fixture
def corpus_dirs(tmp_path):
    root = tmp_path / "corpus"
    return write_corpus(root / "text"), write_images(root / "images")


@pytest.fixture
def text_dataset(corpus_dirs):
    return load_twitter_mner(corpus_dirs[0])


@pytest.fixture
def image_dataset(corpus_dirs):
    return load_twitter_mner(*corpus_dirs)


def decoded(image_dict: dict) -> Image.Image:
    return Image.open(io.BytesIO(image_dict["bytes"]))


# --- corpus text -------------------------------------------------------------------------------


def test_splits_and_features(text_dataset):
    assert {split: part.num_rows for split, part in text_dataset.items()} == {"train": 4, "validation": 1, "test": 3}
    features = text_dataset["train"].features
    assert list(features) == ["id", "image_id", "tokens", "ner_tags", "image", "image_problem"]
    assert isinstance(features["image"], datasets.Image)
    assert features["ner_tags"].feature.names == FIXTURE_LABELS
    assert text_dataset["validation"].features == features


def test_rows_keep_tokens_tags_and_both_id_styles(text_dataset):
    train = text_dataset["train"]
    assert train["id"][:] == ["0", "1", "2", "3"]
    assert train["image_id"][:] == ["1015799", "16_05_01_360", "O_2144", "990"]  # ".jpg" suffix dropped
    assert train[0]["tokens"] == ["George", "Zimmerman", "got", "shot"]
    assert tag_sequences(train)[0] == ["B-PER", "I-PER", "O", "O"]
    assert train[3]["tokens"][-1] == "\u00a0"  # a non-breaking space is a real Twitter token


def test_orphan_inside_tags_are_kept(text_dataset):
    assert tag_sequences(text_dataset["train"])[3][:3] == ["O", "I-OTHER", "I-OTHER"]
    assert tag_sequences(text_dataset["test"])[0][0] == "I-PER"


def test_label_map_renames_a_type(corpus_dirs):
    dataset = load_twitter_mner(corpus_dirs[0], label_map={"OTHER": "MISC"})
    assert dataset["train"].features["ner_tags"].feature.names == [
        "O",
        "B-LOC",
        "I-LOC",
        "B-MISC",
        "I-MISC",
        "B-ORG",
        "I-ORG",
        "B-PER",
        "I-PER",
    ]
    assert tag_sequences(dataset["train"])[2] == ["O", "B-ORG", "I-MISC"]


def test_label_map_must_name_a_training_type(corpus_dirs):
    with pytest.raises(
        ValueError,
        match=r"label_map renames 'MISC', which is not a type of the training split \(LOC, ORG, OTHER, PER\)",
    ):
        load_twitter_mner(corpus_dirs[0], label_map={"MISC": "OTHER"})


@pytest.mark.parametrize("pair", ["OTHER", "OTHER=", "=MISC", "B-OTHER=MISC"])
def test_label_map_syntax(pair):
    with pytest.raises(ValueError, match=f"label_map entries must look like OLD=NEW .*got '{pair}'"):
        parse_label_map([pair])


def test_parse_label_map():
    assert parse_label_map(["OTHER=MISC", "LOC=PLACE"]) == {"OTHER": "MISC", "LOC": "PLACE"}
    assert parse_label_map(["OTHER=creative-work"]) == {"OTHER": "creative-work"}  # WNUT-17's hyphenated type


def test_hyphenated_entity_types_are_read_whole(tmp_path):
    """WNUT-17 tags 'B-creative-work': the type is everything after the first hyphen, as seqeval reads it."""
    tweets = [
        (
            "1",
            [
                ("watching", "O"),
                ("Star", "B-creative-work"),
                ("Wars", "I-creative-work"),
                ("with", "O"),
                ("Ana", "B-person"),
            ],
        )
    ]
    dataset = load_twitter_mner(write_corpus(tmp_path, {"train": tweets, "validation": tweets, "test": tweets}))
    names = dataset["train"].features["ner_tags"].feature.names
    assert names == ["O", "B-creative-work", "I-creative-work", "B-person", "I-person"]
    assert [names[tag] for tag in dataset["test"][0]["ner_tags"]] == [
        "O",
        "B-creative-work",
        "I-creative-work",
        "O",
        "B-person",
    ]


BAD_TRAIN_FILES = [
    ("IMGID:1\nRT O\n", r"train\.txt:2: expected 'token<TAB>tag', got 'RT O' \(no tab\)"),
    ("IMGID:1\nRT\tO\nObama\tB-PERSON-\n", r"train\.txt:3: tag 'B-PERSON-' is not 'O', 'B-TYPE' or 'I-TYPE'"),
    ("IMGID:1\nRT\tO\nObama\tB-PER SON\n", r"train\.txt:3: tag 'B-PER SON' is not 'O', 'B-TYPE' or 'I-TYPE'"),
    (
        "IMGID:1\nRT\tO\nObama\tB-I-PER\n",
        r"train\.txt:3: tag 'B-I-PER' is not 'O', 'B-TYPE' or 'I-TYPE'",
    ),  # a tag twice
    ("IMGID:1\nRT\tO\nObama\tS-PER\n", r"train\.txt:3: tag 'S-PER' is not 'O', 'B-TYPE' or 'I-TYPE'"),
    (
        "IMGID:1\nRT\tO\n\nObama\tB-PER\n",
        r"train\.txt:4: a tweet must start with an 'IMGID:<id>' line, got 'Obama\\tB-PER'",
    ),
    ("IMGID:1\nRT\tO\n\nIMGID:2\n\n", r"train\.txt:4: tweet '2' has no tokens"),
    ("IMGID:\nRT\tO\n", r"train\.txt:1: 'IMGID:' has no image id"),
    ("IMGID:1\n\tO\n", r"train\.txt:2: empty token"),
    ("", r"train\.txt:1: file is empty"),
    ("\n \n", r"train\.txt:1: file is empty"),
]


@pytest.mark.parametrize("text, message", BAD_TRAIN_FILES)
def test_parse_errors_name_file_and_line(tmp_path, text, message):
    data_dir = write_corpus(tmp_path, {split: tweets for split, tweets in FIXTURE_TWEETS.items() if split != "train"})
    (data_dir / "train.txt").write_text(text, encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=message):
        load_twitter_mner(data_dir)


def test_non_utf8_bytes_name_the_line(corpus_dirs):
    data_dir = corpus_dirs[0]
    (data_dir / "valid.txt").write_bytes(b"IMGID:1\nNYC\tB-LOC\ncaf\xe9\tO\n")
    with pytest.raises(CorpusFormatError, match=r"valid\.txt:3: byte 0xe9 is not valid UTF-8"):
        load_twitter_mner(data_dir)


def test_crlf_and_byte_order_mark_are_accepted(corpus_dirs):
    data_dir = corpus_dirs[0]
    text = corpus_text(FIXTURE_TWEETS["validation"]).replace("\n", "\r\n")
    (data_dir / "valid.txt").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    dataset = load_twitter_mner(data_dir)
    assert dataset["validation"][0]["image_id"] == "17_06_1"
    assert dataset["validation"][0]["tokens"] == ["NYC", "rocks"]


def test_tag_unseen_in_training_is_an_error(corpus_dirs):
    data_dir = corpus_dirs[0]
    (data_dir / "test.txt").write_text("IMGID:1\nhi\tO\n\nIMGID:2\nyo\tO\nGoogle\tB-COMPANY\n", encoding="utf-8")
    with pytest.raises(
        CorpusFormatError, match=r"test\.txt:6: test tag 'B-COMPANY' does not occur in the training split"
    ):
        load_twitter_mner(data_dir)


def test_missing_split_file(corpus_dirs):
    (corpus_dirs[0] / "valid.txt").unlink()
    with pytest.raises(ValueError, match=r"data_dir '.*text' lacks valid\.txt"):
        load_twitter_mner(corpus_dirs[0])


def test_missing_directories(tmp_path, corpus_dirs):
    with pytest.raises(ValueError, match=r"data_dir '.*nowhere' is not a directory"):
        load_twitter_mner(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"image_dir '.*nowhere' is not a directory"):
        load_twitter_mner(corpus_dirs[0], tmp_path / "nowhere")


# --- entity counting ---------------------------------------------------------------------------

SEQUENCES = [
    ["O", "I-PER", "I-PER", "B-LOC", "I-ORG", "O"],
    ["I-LOC", "B-PER", "I-PER", "O", "B-ORG"],
    ["B-LOC", "I-LOC", "I-LOC", "B-LOC"],
]


def test_lenient_counts_agree_with_seqeval_chunks():
    counts = count_lenient_entities(SEQUENCES)
    assert counts == {"PER": 2, "LOC": 4, "ORG": 2}
    assert sum(counts.values()) == sum(len(get_entities(tags)) for tags in SEQUENCES)


def test_strict_counts_drop_orphan_inside_tags():
    counts = count_strict_entities(SEQUENCES)
    assert counts == {"PER": 1, "LOC": 3, "ORG": 1}
    assert sum(counts.values()) == sum(map(len, Entities(SEQUENCES, IOB2, suffix=False).entities))


def test_orphan_inside_tags_are_counted():
    counts = count_orphan_inside_tags(SEQUENCES)
    assert counts == {"after O": 2, "after another type": 1}  # I-PER after O, I-LOC first; I-ORG after B-LOC


# --- images ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, problem",
    [
        ("empty", ImageProblem.EMPTY),
        ("truncated_jpeg", ImageProblem.CORRUPT),
        ("garbage", ImageProblem.CORRUPT),
        ("bomb_png", ImageProblem.TOO_LARGE),
    ],
)
def test_unusable_images_are_recorded_with_the_reason(tmp_path, kind, problem):
    write_image(tmp_path, "1", kind)
    loaded = read_image(tmp_path, "1")
    assert (loaded.image, loaded.problem) == (None, problem)


def test_missing_file(tmp_path):
    loaded = read_image(tmp_path, "404")
    assert (loaded.image, loaded.problem) == (None, ImageProblem.MISSING)


def test_max_pixels_guard(tmp_path):
    write_image(tmp_path, "1", "rgb_jpeg")  # 32x24 = 768 pixels
    assert read_image(tmp_path, "1", max_pixels=767).problem is ImageProblem.TOO_LARGE
    assert read_image(tmp_path, "1", max_pixels=768).problem is None


@pytest.mark.parametrize(
    "kind", ["cmyk_jpeg", "grayscale_jpeg", "palette_png", "png_alpha", "animated_gif", "exif_rotated"]
)
def test_other_modes_are_stored_as_rgb_png(tmp_path, kind):
    write_image(tmp_path, "1", kind)
    loaded = read_image(tmp_path, "1")
    assert loaded.problem is None
    image = decoded(loaded.image)
    assert (image.format, image.mode, getattr(image, "n_frames", 1)) == ("PNG", "RGB", 1)
    assert loaded.image["path"] == "1.png"


def test_rgb_jpeg_keeps_its_bytes(tmp_path):
    path = write_image(tmp_path, "16_05_01_360", "rgb_jpeg")
    loaded = read_image(tmp_path, "16_05_01_360")
    assert loaded.image == {"bytes": path.read_bytes(), "path": "16_05_01_360.jpg"}


def test_alpha_is_composited_over_white(tmp_path):
    write_image(tmp_path, "1", "png_alpha")
    image = decoded(read_image(tmp_path, "1").image)
    assert image.getpixel((0, 0)) == WHITE and image.getpixel((15, 0)) == BLUE


def test_animated_gif_keeps_the_first_frame(tmp_path):
    write_image(tmp_path, "1", "animated_gif")
    assert decoded(read_image(tmp_path, "1").image).getpixel((0, 0)) == RED


def test_exif_rotation_is_applied(tmp_path):
    write_image(tmp_path, "1", "exif_rotated")
    image = decoded(read_image(tmp_path, "1").image)
    assert image.size == (16, 32)
    assert "Orientation" not in str(image.getexif())


def test_cmyk_colours_survive(tmp_path):
    write_image(tmp_path, "1", "cmyk_jpeg")
    red, green, blue = decoded(read_image(tmp_path, "1").image).getpixel((4, 4))
    assert red > 200 and green < 60 and blue < 60


@pytest.mark.parametrize("image_id", ["../../etc/passwd", "/etc/passwd", "../images/1", "a/b"])
def test_image_id_cannot_leave_image_dir(tmp_path, image_id):
    image_dir = tmp_path / "corpus" / "images"
    write_image(image_dir, "1", "rgb_jpeg")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd.jpg").write_bytes(IMAGE_BYTES["rgb_jpeg"]())  # readable, were it not refused
    assert read_image(image_dir, image_id).problem is ImageProblem.OUTSIDE_IMAGE_DIR


def test_loader_records_each_tweet_image(image_dataset):
    problems = {split: part["image_problem"][:] for split, part in image_dataset.items()}
    assert problems == {
        "train": [None, None, None, "missing file"],
        "validation": [None],
        "test": ["corrupt", "outside image_dir", None],
    }
    assert image_dataset["train"][3]["image"] is None
    assert image_dataset["train"][3]["tokens"] == ["the", "Super", "Bowl", "\u00a0"]  # text kept without image
    assert image_dataset["train"][0]["image"].mode == "RGB"


def test_text_only_dataset_says_why(text_dataset):
    assert set(text_dataset["train"]["image_problem"]) == {"no image_dir"}
    assert set(text_dataset["train"]["image"]) == {None}


# --- Parquet export and card -------------------------------------------------------------------


def test_exported_folder_loads_the_same_rows(image_dataset, tmp_path):
    folder = tmp_path / "export"
    export_parquet(image_dataset, folder, source="fixture", corpus="twitter-2015")
    assert sorted(path.name for path in (folder / "data").iterdir()) == [
        "test-00000-of-00001.parquet",
        "train-00000-of-00001.parquet",
        "validation-00000-of-00001.parquet",
    ]
    loaded = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "hf_cache"))
    assert list(loaded) == ["train", "validation", "test"]
    for split, part in image_dataset.items():
        assert loaded[split].features == part.features
        for original, reloaded in zip(
            part.cast_column("image", datasets.Image(decode=False)),
            loaded[split].cast_column("image", datasets.Image(decode=False)),
            strict=True,
        ):
            assert reloaded == original


def test_card_documents_the_dataset(image_dataset, tmp_path):
    card = export_parquet(image_dataset, tmp_path / "export", source="fixture", corpus="twitter-2015").read_text()
    yaml = card.split("---")[1]
    for expected in (
        "configs:",
        "path: data/train-*",
        "split: validation",
        "dataset_info:",
        "class_label:",
        "num_examples: 4",
        "dtype: image",
        "task_ids:",
    ):
        assert expected in yaml
    assert "| test | 3 | 6 | 1 |" in card  # tweets, tokens, images
    assert "| LOC | 2 | 2 | 1 | 1 | 1 | 1 |" in card
    assert "| OTHER | 2 | 0 | 0 | 0 | 0 | 0 |" in card  # I-OTHER after O and after B-ORG start lenient entities
    assert "| after O | 1 | 0 | 1 |" in card and "| after another type | 1 | 0 | 0 |" in card
    assert "| missing file | 1 | 0 | 0 |" in card and "| outside image_dir | 0 | 0 | 1 |" in card
    assert "| corrupt | 0 | 0 | 1 |" in card and "| too large |" not in card  # kinds that never occur are left out
    assert "@inproceedings{zhang2018adaptive" in card


def test_export_refuses_a_non_empty_folder(text_dataset, tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "data").mkdir()
    stale = folder / "data" / "train-00001-of-00002.parquet"
    stale.write_bytes(b"stale")
    with pytest.raises(ValueError, match=r"output_dir '.*export' is not empty; pass overwrite=True"):
        export_parquet(text_dataset, folder, source="fixture", corpus="twitter-2015")
    export_parquet(text_dataset, folder, source="fixture", corpus="twitter-2015", overwrite=True)
    assert not stale.exists()


def test_command_exports_and_prints_image_summary(corpus_dirs, tmp_path, caplog):
    folder = tmp_path / "export"
    argv = [
        "--data_dir",
        str(corpus_dirs[0]),
        "--image_dir",
        str(corpus_dirs[1]),
        "--output_dir",
        str(folder),
        "--corpus",
        "twitter-2017",
        "--label_map",
        "OTHER=MISC",
    ]
    with caplog.at_level(logging.INFO):
        main(argv)
    assert "| loaded | 3 | 1 | 1 |" in caplog.text
    assert "| missing file | 1 | 0 | 0 |" in caplog.text
    assert "I-MISC" in (folder / "README.md").read_text()


# --- image feature cache -----------------------------------------------------------------------


class StandInVgg(torch.nn.Module):
    """Exposes `get_image_features` like the ACN model: (batch, 3, H, W) -> (batch, 49, 512)."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(2.0))
        self.images_seen = 0

    def get_image_features(self, pixel_values):
        self.images_seen += pixel_values.shape[0]
        regions = torch.nn.functional.adaptive_avg_pool2d(pixel_values, 7).flatten(2).transpose(1, 2)  # (batch, 49, 3)
        return self.scale * regions.repeat(1, 1, 171)[..., :512]  # (batch, 49, 512)


class StandInProcessor:
    """Resizes to 14x14 and scales to [0, 1]; a None image gives zeros and a False mask."""

    def __call__(self, images, return_tensors):
        pixels = [
            torch.zeros(3, 14, 14)
            if image is None
            else torch.tensor(list(image.convert("RGB").resize((14, 14)).getdata())).T.reshape(3, 14, 14) / 255
            for image in images
        ]
        return {
            "pixel_values": torch.stack(pixels),
            "image_mask": torch.tensor([image is not None for image in images]),
        }

    def to_dict(self):
        return {"size": 14}


def test_feature_cache_adds_columns_and_hits_the_cache(image_dataset, tmp_path, caplog):
    model, processor = StandInVgg(), StandInProcessor()
    with caplog.at_level(logging.INFO):
        cached = cache_image_features(image_dataset["train"], model, processor, batch_size=3, cache_dir=tmp_path)
    assert "images/s" in caplog.text
    assert model.images_seen == 3  # the tweet without an image never reaches the model
    assert cached.features["image_features"] == datasets.Array2D(shape=(49, 512), dtype="float16")
    assert str(cached.data.schema.field("image_features").type.storage_type) == "list<item: list<item: halffloat>>"
    features = cached.with_format("torch")[:]["image_features"]  # the formatter upcasts to float32
    assert features.shape == (4, 49, 512)
    assert cached["image_mask"][:] == [True, True, True, False]
    assert features[3].abs().sum() == 0 and features[0].abs().sum() > 0
    assert torch.allclose(features[0, 0, :3].float(), 2 * torch.tensor([1.0, 0.0, 0.0]), atol=0.05)  # red

    caplog.clear()
    with caplog.at_level(logging.INFO):
        again = cache_image_features(image_dataset["train"], model, processor, batch_size=3, cache_dir=tmp_path)
    assert model.images_seen == 3 and "cache hit" in caplog.text
    assert torch.equal(again.with_format("torch")[:]["image_features"], features)

    with torch.no_grad():
        model.scale.fill_(3.0)  # new weights: a new fingerprint, so the features are computed again
    cache_image_features(image_dataset["train"], model, processor, batch_size=3, cache_dir=tmp_path)
    assert model.images_seen == 6


def test_feature_cache_checks_its_arguments(text_dataset, tmp_path):
    with pytest.raises(ValueError, match="batch_size must be positive, got 0"):
        cache_image_features(text_dataset["train"], StandInVgg(), StandInProcessor(), batch_size=0)
    without_images = text_dataset["train"].remove_columns("image")
    with pytest.raises(ValueError, match=r"dataset has no 'image' column, only \['id'"):
        cache_image_features(without_images, StandInVgg(), StandInProcessor(), cache_dir=tmp_path)


@pytest.fixture(scope="module")
def tiny_acn():
    """A small ACN (random VGG-16 trunk, nothing downloads) and its image processor."""
    modeling_acn = pytest.importorskip("modeling_acn")
    from modeling_acn.image_processing_acn import AcnImageProcessor

    torch.manual_seed(0)
    config = modeling_acn.AcnConfig(
        word_embedding_dim=8, hidden_size=8, attention_size=8, char_embedding_dim=4, char_num_filters=2
    )
    return modeling_acn.AcnForTokenClassification(config).eval(), AcnImageProcessor()


@pytest.mark.slow
def test_feature_cache_matches_the_model(image_dataset, tiny_acn, tmp_path):
    model, processor = tiny_acn
    cached = cache_image_features(image_dataset["validation"], model, processor, cache_dir=tmp_path)
    inputs = processor(images=[image_dataset["validation"][0]["image"]], return_tensors="pt")
    with torch.no_grad():
        expected = model.get_image_features(inputs["pixel_values"])[0]  # (49, 512)
    stored = cached.with_format("torch")[0]["image_features"]
    assert torch.allclose(stored, expected.half().float())
    assert cached[0]["image_mask"] is True


@pytest.mark.slow
def test_cache_features_command(image_dataset, tiny_acn, tmp_path, caplog):
    model, processor = tiny_acn
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    export_parquet(image_dataset, tmp_path / "export", source="fixture", corpus="twitter-2015")

    def argv(output_name):
        return [
            "cache-features",
            "--dataset",
            str(tmp_path / "export"),
            "--model",
            str(model_dir),
            "--output_dir",
            str(tmp_path / output_name),
            "--cache_dir",
            str(tmp_path / "cache"),
            "--device",
            "cpu",
        ]

    with caplog.at_level(logging.INFO):
        main(argv("features"))
    assert caplog.text.count("images/s") == 3
    saved = datasets.load_from_disk(str(tmp_path / "features"))
    assert saved["train"]["image_mask"][:] == [True, True, True, False]
    assert saved["test"].features["image_features"].shape == (49, 512)

    caplog.clear()
    with caplog.at_level(logging.INFO):
        main(argv("features_again"))
    assert caplog.text.count("cache hit") == 3

    caplog.clear()
    with caplog.at_level(logging.INFO):
        main([*argv("features_fp32"), "--vision_precision", "fp32"])
    # the default ran in the precision this CPU picks: int8 (x86 CPUs), bf16 (other CPUs with bf16 kernels) or fp32
    precision = read_vision_settings(tmp_path / "features" / VISION_WEIGHTS_FILE)["vision_precision"]
    assert caplog.text.count("cache hit") == (3 if precision == "fp32" else 0)  # another precision, other features
    fp32 = datasets.load_from_disk(str(tmp_path / "features_fp32")).with_format("torch")["train"][:]["image_features"]
    default = saved.with_format("torch")["train"][:]["image_features"]  # (4, 49, 512)
    tolerance = {"fp32": 0.0, "bf16": 0.03, "int8": 0.08}[precision]  # of the largest feature; int8: about 3.5-4%
    torch.testing.assert_close(fp32.float(), default.float(), atol=tolerance * default.abs().max().item(), rtol=0)


@pytest.mark.slow
def test_cache_features_with_a_random_trunk_saves_that_trunk(image_dataset, tmp_path):
    export_parquet(image_dataset, tmp_path / "export", source="fixture", corpus="twitter-2015")
    main(
        [
            "cache-features",
            "--dataset",
            str(tmp_path / "export"),
            "--vision_weights",
            "random",
            "--seed",
            "3",
            "--output_dir",
            str(tmp_path / "features"),
            "--cache_dir",
            str(tmp_path / "cache"),
            "--device",
            "cpu",
        ]
    )
    saved = datasets.load_from_disk(str(tmp_path / "features"))
    trunk = AcnModel(AcnConfig())
    trunk.load_vision_weights(tmp_path / "features" / VISION_WEIGHTS_FILE)
    image = AcnImageProcessor()(images=[saved["train"][0]["image"]], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = trunk.get_image_features(image)[0]  # (49, 512)
    torch.testing.assert_close(saved.with_format("torch")["train"][0]["image_features"], expected.half().float())


# --- the real Twitter-2015 text ----------------------------------------------------------------


@pytest.mark.skipif(not REAL_CORPUS.is_dir(), reason="../shared/data/twitter2015 is absent")
def test_real_twitter2015_text():
    dataset = load_twitter_mner(REAL_CORPUS)
    assert {split: part.num_rows for split, part in dataset.items()} == {
        "train": 4000,
        "validation": 1000,
        "test": 3257,
    }
    test_tags = tag_sequences(dataset["test"])
    assert sum(count_lenient_entities(test_tags).values()) == 5207
    assert sum(count_strict_entities(test_tags).values()) == 5072
    orphans = [count_orphan_inside_tags(tag_sequences(part))["after O"] for part in dataset.values()]
    assert orphans == [175, 52, 129]


def test_feature_cache_key_ignores_weights_outside_the_trunk(image_dataset):
    from acn_mner.feature_cache import image_features_fingerprint

    model = AcnModel(AcnConfig(vocab_size=5, char_vocab_size=5, hidden_size=8, attention_size=4, word_embedding_dim=4))
    processor = AcnImageProcessor()
    before = image_features_fingerprint(image_dataset["train"], model, processor)
    with torch.no_grad():
        model.get_input_embeddings().weight.add_(1.0)  # training changes the text side only
    assert image_features_fingerprint(image_dataset["train"], model, processor) == before
    with torch.no_grad():
        model.vision[0].bias.add_(1.0)
    assert image_features_fingerprint(image_dataset["train"], model, processor) != before
