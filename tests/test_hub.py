"""What would go to the Hub: the model repo (train_acn --push_to_hub, model/processor push_to_hub) and the dataset repo
(the exporter's --push_to_hub), with the Hub API mocked: every file sent is checked, nothing leaves the machine."""

import json
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest
import yaml
from datasets.arrow_dataset import _get_updated_dataset_card
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, ModelCard, hf_api
from huggingface_hub.errors import EntryNotFoundError

from acn_mner import dataset_card, dataset_command, parquet_export
from acn_mner import train as train_acn
from acn_mner.corpus import load_twitter_mner
from tests.pipeline_fixtures import tiny_pipeline
from tests.training_fixtures import TINY_FLAGS

MODEL_CODE = {
    "configuration_acn.py",
    "modeling_acn.py",
    "pipeline_acn.py",
    "processing_acn.py",
    "image_processing_acn.py",
    "tokenization_acn.py",
    "vision_acn.py",
    "quantization_acn.py",
    "torch_export_acn.py",
    "url_policy_acn.py",
}
MODEL_FILES = {
    "config.json",
    "model.safetensors",
    "processor_config.json",
    "preprocessor_config.json",
    "tokenizer_config.json",
    "vocab.json",
    "char_vocab.json",
} | MODEL_CODE
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class FakeHub:
    """Records the repositories created, the cards sent for YAML validation and the commits sent through
    `huggingface_hub.HfApi`; lists `remote_files` as the repository's."""

    def __init__(self, remote_files=()):
        self.repos, self.commits, self.remote_files, self.validated_cards = [], [], list(remote_files), []
        self.calls = []  # "create_repo", "auth_check", "commit" in the order they came

    def create_repo(self, api, repo_id, **options):
        self.calls.append("create_repo")
        self.repos.append({"repo_id": repo_id, **options})
        return SimpleNamespace(repo_id=repo_id)

    def auth_check(self, api, repo_id, **options):
        self.calls.append("auth_check")
        assert repo_id in [repo["repo_id"] for repo in self.repos] and options.get("write") is True

    def create_commit(self, api, repo_id, operations, **options):
        added = {
            op.path_in_repo: _content(op.path_or_fileobj) for op in operations if isinstance(op, CommitOperationAdd)
        }
        deleted = [op.path_in_repo for op in operations if isinstance(op, CommitOperationDelete)]
        self.calls.append("commit")
        self.commits.append({"repo_id": repo_id, "added": added, "deleted": deleted, **options})  # read now: a
        return SimpleNamespace(oid="0" * 40, pr_url=None, commit_url="")  # push_to_hub's folder is temporary

    def list_repo_files(self, api, repo_id, **options):
        return self.remote_files

    def added(self, commit=-1) -> dict[str, bytes]:
        """Path in the repository -> the bytes that would be uploaded."""
        return self.commits[commit]["added"]

    def deleted(self, commit=-1) -> list[str]:
        return self.commits[commit]["deleted"]


def _content(source) -> bytes:
    if isinstance(source, bytes):
        return source
    if hasattr(source, "read"):
        return source.read()
    return Path(source).read_bytes()


@pytest.fixture
def hub(monkeypatch):
    fake = FakeHub(remote_files=["README.md", "data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"])
    monkeypatch.setattr(HfApi, "create_repo", lambda api, repo_id, **kw: fake.create_repo(api, repo_id, **kw))
    monkeypatch.setattr(HfApi, "auth_check", lambda api, repo_id, **kw: fake.auth_check(api, repo_id, **kw))
    monkeypatch.setattr(
        HfApi,
        "create_commit",
        lambda api, repo_id, operations, **kw: fake.create_commit(api, repo_id, operations, **kw),
    )
    monkeypatch.setattr(HfApi, "list_repo_files", lambda api, repo_id, **kw: fake.list_repo_files(api, repo_id, **kw))
    monkeypatch.setattr(hf_api, "is_xet_available", lambda: False)  # upload_folder's single-commit path
    monkeypatch.setattr(HfApi, "_validate_yaml", lambda api, content, **kw: fake.validated_cards.append(content))

    def no_remote_card(*args, **kwargs):
        raise EntryNotFoundError("no README.md in the (mocked) repository")

    monkeypatch.setattr(ModelCard, "load", no_remote_card)
    return fake


def card_yaml(text: str) -> dict:
    return yaml.safe_load(text.split("---")[1])


# --- the model repository ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_push_sends_the_final_model_and_results_never_checkpoints(corpus, tmp_path, hub):
    output_dir = tmp_path / "out"
    train_acn.main(
        [
            "--dataset",
            str(corpus),
            "--output_dir",
            str(output_dir),
            *TINY_FLAGS,
            "--num_epochs",
            "2",
            "--push_to_hub",
            "--hub_model_id",
            "someone/acn-tiny",
            "--hub_private_repo",
            "--hub_dataset_id",
            "someone/twitter-tiny",
        ]
    )
    assert (output_dir / "checkpoints").is_dir()  # they exist, and stay local
    assert hub.repos == [{"repo_id": "someone/acn-tiny", "private": True, "exist_ok": True}]
    assert len(hub.commits) == 1 and hub.commits[0]["repo_id"] == "someone/acn-tiny" and not hub.deleted()
    sent = hub.added()
    assert set(sent) == MODEL_FILES | set(train_acn.RESULT_FILES)
    assert not [name for name in sent if name.endswith(PICKLE_SUFFIXES) or "checkpoint" in name]
    for name in sent:
        assert sent[name] == (output_dir / name).read_bytes(), name  # the files as the run wrote them

    config = json.loads(sent["config.json"])
    assert config["custom_pipelines"]["multimodal-ner"]["impl"] == "pipeline_acn.AcnPipeline"
    card = sent["README.md"].decode()
    metadata = card_yaml(card)
    assert metadata["license"] == "apache-2.0" and metadata["language"] == ["en"]
    assert metadata["datasets"] == ["someone/twitter-tiny"] and metadata["metrics"] == ["seqeval"]
    assert metadata["inference"] is False and metadata["pipeline_tag"] == "token-classification"
    assert "base_model" not in metadata  # the paper's encoder has no pretrained base
    results = metadata["model-index"][0]["results"]
    assert {result["dataset"]["type"] for result in results} == {"someone/twitter-tiny"}
    f1 = [
        metric["value"]
        for result in results
        for metric in result["metrics"]
        if metric["name"] == "test entity f1 (lenient)"
    ]
    all_results = json.loads(sent["all_results.json"])
    assert f1 == [round(100 * all_results["test_overall_f1"], 2)]
    assert 'pipeline("token-classification", model="someone/acn-tiny", trust_remote_code=True)' in card
    assert 'pipeline("multimodal-ner", model="someone/acn-tiny", trust_remote_code=True)' in card
    assert str(corpus) not in card.split("## Training command")[0]  # no local path where the Hub shows the dataset


def test_push_refuses_a_card_without_hub_ids(corpus, tmp_path, capsys):
    base = ["--dataset_name", str(corpus), "--output_dir", str(tmp_path), "--push_to_hub"]
    for extra, message in [
        ([], "--push_to_hub needs --hub_model_id"),
        (
            ["--hub_model_id", "me/m"],
            f"--dataset_name {corpus} is a local folder: give its Hub id with --hub_dataset_id",
        ),
        (
            ["--hub_model_id", "me/m", "--hub_dataset_id", "me/d", "--text_encoder", str(corpus)],
            f"--text_encoder {corpus} is a local folder: give its Hub id with --hub_base_model",
        ),
    ]:
        with pytest.raises(SystemExit):
            train_acn.parse_args(base + extra)
        assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything was written


class TrainingStarted(Exception):
    """Raised by the first training step, when a test only needs to know whether training was reached."""


def push_run(corpus, output_dir, *extra):
    train_acn.main(
        [
            "--dataset_name",
            str(corpus),
            "--output_dir",
            str(output_dir),
            *TINY_FLAGS,
            "--num_train_epochs",
            "1",
            "--push_to_hub",
            "--hub_model_id",
            "someone/acn-tiny",
            "--hub_dataset_id",
            "someone/twitter-tiny",
            *extra,
        ]
    )


@pytest.mark.bad_input(
    "`acn-train --push_to_hub` offline, without a login, or without write access to `--hub_model_id`",
    "refused in one line naming --push_to_hub and --hub_model_id before the corpus is read or any training step",
)
def test_push_to_hub_fails_before_training_when_the_repository_cannot_be_written(corpus, tmp_path, monkeypatch):
    steps = []
    monkeypatch.setattr(train_acn, "train_epoch", lambda *args, **kwargs: steps.append(1))
    monkeypatch.setattr(train_acn, "load_training_corpus", lambda *args, **kwargs: steps.append("corpus"))

    def offline(api, repo_id, **options):
        raise OSError("[Errno -2] Name or service not known")  # what create_repo meets without a network

    def read_only(api, repo_id, **options):
        raise PermissionError(f"403 Forbidden: no write access to {repo_id}")

    monkeypatch.setattr(HfApi, "create_repo", offline)
    with pytest.raises(ValueError, match=r"--push_to_hub: cannot create or write .* --hub_model_id someone/acn-tiny"):
        push_run(corpus, tmp_path / "offline")
    monkeypatch.setattr(HfApi, "create_repo", lambda api, repo_id, **kw: SimpleNamespace(repo_id=repo_id))
    monkeypatch.setattr(HfApi, "auth_check", read_only)
    with pytest.raises(ValueError, match="no write access to someone/acn-tiny"):
        push_run(corpus, tmp_path / "read_only")
    assert steps == []


def test_push_to_hub_creates_the_repository_before_the_first_training_step(corpus, tmp_path, hub, monkeypatch):
    def first_step(*args, **kwargs):
        hub.calls.append("training step")
        raise TrainingStarted

    monkeypatch.setattr(train_acn, "train_epoch", first_step)
    with pytest.raises(TrainingStarted):
        push_run(corpus, tmp_path / "out", "--hub_private_repo")
    assert hub.calls == ["create_repo", "auth_check", "training step"]
    assert hub.repos == [{"repo_id": "someone/acn-tiny", "private": True, "exist_ok": True}]


def test_card_names_the_pretrained_encoder_as_base_model(tmp_path):
    from acn_mner.model_card import card_data

    args = train_acn.parse_args(
        [
            "--dataset",
            "someone/twitter-2015",
            "--output_dir",
            str(tmp_path),
            "--text_encoder",
            "sentence-transformers/all-MiniLM-L6-v2",
        ]
    )
    scores = {"overall_precision": 0.5, "overall_recall": 0.25, "overall_f1": 1 / 3}
    metadata = card_data(args, {"test": scores, "validation": scores}).to_dict()
    assert metadata["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert metadata["datasets"] == ["someone/twitter-2015"]  # a Hub --dataset is its own id
    local = train_acn.parse_args(
        [
            "--dataset",
            str(tmp_path),
            "--output_dir",
            str(tmp_path),
            "--text_encoder",
            str(tmp_path),
            "--hub_base_model",
            "me/encoder",
        ]
    )
    local_metadata = card_data(local, {"test": scores, "validation": scores}).to_dict()
    assert local_metadata["base_model"] == "me/encoder"
    assert "datasets" not in local_metadata and "model-index" not in local_metadata  # no Hub id: no local path either


def test_model_and_processor_push_to_hub_send_a_folder_the_pipeline_loads(hub, tmp_path):
    pipe = tiny_pipeline()
    pipe.model.push_to_hub("someone/acn-raw")
    pipe.processor.push_to_hub("someone/acn-raw")
    model_files, processor_files = hub.added(0), hub.added(1)
    assert {"configuration_acn.py", "modeling_acn.py", "pipeline_acn.py", "model.safetensors"} <= set(model_files)
    assert MODEL_CODE <= set(model_files) | set(processor_files)
    assert {"processor_config.json", "tokenizer_config.json", "vocab.json", "char_vocab.json"} <= set(processor_files)
    assert not [name for name in {**model_files, **processor_files} if name.endswith(PICKLE_SUFFIXES)]
    config = json.loads(model_files["config.json"])
    assert {task: entry["impl"] for task, entry in config["custom_pipelines"].items()} == {
        task: "pipeline_acn.AcnPipeline" for task in ("multimodal-ner", "token-classification", "ner")
    }

    # the two uploads together are a folder the pipeline factory loads (the fresh-process test loads such a folder
    # with the installed package hidden)
    folder = tmp_path / "repo"
    for name, content in {**model_files, **processor_files}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    from transformers import pipeline

    from modeling_acn import AcnPipeline

    loaded = pipeline("multimodal-ner", model=str(folder), pipeline_class=AcnPipeline, device="cpu")
    tweet = "Merkel meets Obama in Paris"
    assert loaded(tweet, return_tags=True)["tags"] == pipe(tweet, return_tags=True)["tags"]


# --- the dataset repository ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_export(tmp_path_factory):
    from acn_mner import demo_corpus

    root = tmp_path_factory.mktemp("demo")
    folder = demo_corpus.write_demo_corpus(root / "corpus", seed=0, num_train=6, num_valid=3, num_test=3)
    return folder


def test_exporter_push_sends_the_card_and_shards_and_deletes_stale_remote_shards(demo_export, tmp_path, hub):
    output_dir = tmp_path / "export"
    output_dir.mkdir()
    (output_dir / "notes.txt").write_text("the user's own file")  # in the folder, not part of the export
    dataset_command.main(
        [
            "--data_dir",
            str(demo_export),
            "--image_dir",
            str(demo_export / "images"),
            "--output_dir",
            str(output_dir),
            "--corpus",
            "demo",
            "--overwrite",
            "--push_to_hub",
            "someone/acn-demo",
            "--hub_private_repo",
        ]
    )
    assert hub.repos == [{"repo_id": "someone/acn-demo", "repo_type": "dataset", "private": True, "exist_ok": True}]
    assert hub.commits[0]["repo_type"] == "dataset"
    sent = hub.added()
    shards = [
        "data/test-00000-of-00001.parquet",
        "data/train-00000-of-00001.parquet",
        "data/validation-00000-of-00001.parquet",
    ]
    assert sorted(sent) == ["README.md", *shards]
    assert sorted(hub.deleted()) == ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]
    for name in sent:
        assert sent[name] == (output_dir / name).read_bytes()


def test_demo_card_cites_itself_and_twitter_cards_cite_their_papers(demo_export, tmp_path):
    dataset = load_twitter_mner(demo_export, demo_export / "images")
    cards = {
        corpus: parquet_export.export_parquet(dataset, tmp_path / corpus, source="corpus", corpus=corpus).read_text()
        for corpus in ("demo", "twitter-2015", "twitter-2017")
    }
    demo = card_yaml(cards["demo"])
    assert demo["license"] == "apache-2.0" and demo["size_categories"] == ["n<1K"]
    assert demo["task_categories"] == ["token-classification"] and demo["pretty_name"] == "acn-mner demo corpus"
    assert "@software{acn_mner_demo_corpus" in cards["demo"] and "zhang2018adaptive" not in cards["demo"]
    assert "lu2018visual" not in cards["demo"]
    assert "@inproceedings{zhang2018adaptive" in cards["twitter-2015"] and "lu2018visual" not in cards["twitter-2015"]
    assert "@inproceedings{lu2018visual" in cards["twitter-2017"] and "zhang2018adaptive" not in cards["twitter-2017"]
    assert card_yaml(cards["twitter-2015"])["license"] == "unknown"
    with pytest.raises(
        ValueError, match="corpus must be one of \\['demo', 'twitter-2015', 'twitter-2017'\\], got 'twitter'"
    ):
        parquet_export.export_parquet(dataset, tmp_path / "x", source="corpus", corpus="twitter")


@pytest.mark.parametrize(
    "num_examples, category",
    [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (8257, "1K<n<10K"), (99_999, "10K<n<100K"), (10**6, "n>1M")],
)
def test_size_category_bounds(num_examples, category):
    assert dataset_card.size_category(num_examples) == category


def test_export_card_metadata_is_what_push_to_hub_writes(demo_export, tmp_path):
    """The card's configs and dataset_info equal those DatasetDict.push_to_hub computes for the same splits."""
    dataset = load_twitter_mner(demo_export, demo_export / "images")
    ours = card_yaml(parquet_export.export_parquet(dataset, tmp_path / "ours", source="c", corpus="demo").read_text())
    empty_repo = tmp_path / "empty_repo"
    empty_repo.mkdir()
    splits = [
        datasets.SplitInfo(name=split, num_bytes=part.data.nbytes, num_examples=part.num_rows)
        for split, part in dataset.items()
    ]
    theirs_card, _ = _get_updated_dataset_card(
        fs=DirFileSystem(path=str(empty_repo), fs=LocalFileSystem()),
        config_name="default",
        splits_info=splits,
        features=dataset["train"].features,
        data_dir="data",
        set_default=None,
        uploaded_sizes=[0] * len(splits),
        deleted_sizes=[],
        remove_other_splits=True,
    )
    theirs = card_yaml(str(theirs_card))
    assert ours["configs"] == theirs["configs"]
    for key in ("features", "splits", "config_name"):
        assert ours["dataset_info"].get(key) == theirs["dataset_info"].get(key), key
