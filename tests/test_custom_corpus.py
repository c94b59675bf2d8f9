"""A corpus of one's own through the exporter: the card's name, license and citation come from --dataset_name,
--license and --citation_file (or export_parquet's name=, license=, citation=), replace a preset's, and are never
claimed when not given."""

import re

import pytest
import yaml

from acn_mner.corpus import load_twitter_mner
from acn_mner.dataset_card import NO_LICENSE_TEXT, TWITTER_TERMS
from acn_mner.dataset_command import main
from acn_mner.parquet_export import export_parquet
from tests.corpus_fixtures import write_corpus

OWN_CITATION = """\
@article{doe2026tweets,
  title  = {Our Own Tweets, Tagged},
  author = {Doe, Jane},
  year   = {2026}
}"""


@pytest.fixture
def data_dir(tmp_path):
    return write_corpus(tmp_path / "our-tweets")


@pytest.fixture
def bib_file(tmp_path):
    path = tmp_path / "ours.bib"
    path.write_text(f"\n{OWN_CITATION}\n\n", encoding="utf-8")
    return path


def export(data_dir, output_dir, *flags) -> str:
    main(["--data_dir", str(data_dir), "--output_dir", str(output_dir), *flags])
    return (output_dir / "README.md").read_text(encoding="utf-8")


def card_yaml(card: str) -> dict:
    return yaml.safe_load(card.split("---")[1])


def test_without_flags_the_card_claims_no_license_and_no_citation(data_dir, tmp_path):
    card = export(data_dir, tmp_path / "export")
    metadata = card_yaml(card)
    assert "license" not in metadata  # not "unknown" nor "other": nothing is claimed
    assert metadata["pretty_name"] == "our-tweets" and "# our-tweets\n" in card
    assert f"## License\n\n{NO_LICENSE_TEXT}" in card
    assert "## Citation" not in card and "bibtex" not in card and "@" not in card.split("## License")[1]
    for preset_words in ("Twitter-2015", "Twitter-2017", "Zhang", "Lu et al", "demo corpus", TWITTER_TERMS):
        assert preset_words not in card


def test_the_data_dir_name_is_the_default_name_even_for_dot(data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(data_dir)
    card = export(".", tmp_path / "export")
    assert card_yaml(card)["pretty_name"] == "our-tweets"


def test_dataset_name_alone(data_dir, tmp_path):
    card = export(data_dir, tmp_path / "export", "--dataset_name", "Our tweets, tagged")
    assert card_yaml(card)["pretty_name"] == "Our tweets, tagged" and "# Our tweets, tagged\n" in card
    assert "license" not in card_yaml(card) and "## Citation" not in card


def test_license_alone(data_dir, tmp_path):
    card = export(data_dir, tmp_path / "export", "--license", "cc-by-4.0")
    assert card_yaml(card)["license"] == "cc-by-4.0"
    assert "## License\n\nThe corpus is licensed under `cc-by-4.0`" in card and NO_LICENSE_TEXT not in card
    assert "## Citation" not in card


def test_citation_file_alone(data_dir, bib_file, tmp_path):
    card = export(data_dir, tmp_path / "export", "--citation_file", str(bib_file))
    assert f"## Citation\n\n```bibtex\n{OWN_CITATION}\n```\n" in card
    assert "license" not in card_yaml(card) and NO_LICENSE_TEXT in card


def test_all_three_flags(data_dir, bib_file, tmp_path):
    card = export(
        data_dir, tmp_path / "export", "--dataset_name", "Ours", "--license", "mit", "--citation_file", str(bib_file)
    )
    metadata = card_yaml(card)
    assert (metadata["pretty_name"], metadata["license"]) == ("Ours", "mit")
    assert "@article{doe2026tweets" in card and "zhang2018adaptive" not in card


def test_flags_replace_a_presets_name_license_and_citation(data_dir, bib_file, tmp_path):
    card = export(
        data_dir,
        tmp_path / "export",
        "--corpus",
        "twitter-2015",
        "--license",
        "cc-by-nc-4.0",
        "--citation_file",
        str(bib_file),
        "--dataset_name",
        "Twitter-2015, our fixes",
    )
    metadata = card_yaml(card)
    assert (metadata["pretty_name"], metadata["license"]) == ("Twitter-2015, our fixes", "cc-by-nc-4.0")
    assert TWITTER_TERMS not in card  # the preset's license text went with its license
    assert "@article{doe2026tweets" in card and "zhang2018adaptive" not in card
    assert "introduced by Zhang et al. (2018)" in card  # where the corpus comes from stays the preset's


def test_a_preset_keeps_what_no_flag_replaces(data_dir, tmp_path):
    card = export(data_dir, tmp_path / "export", "--corpus", "twitter-2017", "--dataset_name", "T17 subset")
    metadata = card_yaml(card)
    assert (metadata["pretty_name"], metadata["license"]) == ("T17 subset", "unknown")
    assert TWITTER_TERMS in card and "@inproceedings{lu2018visual" in card


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--citation_file", "{tmp}/nowhere.bib"], r"argument --citation_file: no such file: '.*/nowhere\.bib'"),
        (
            ["--citation_file", "{tmp}/notes.bib"],
            r"argument --citation_file: '.*/notes\.bib' must hold a BibTeX entry .*got 'see our paper'",
        ),
        (["--citation_file", "{tmp}"], r"argument --citation_file: cannot read '.*': \[Errno 21\] Is a directory"),
        (["--license", "Apache 2.0"], r"argument --license: license must be a Hub license id .*got 'Apache 2\.0'"),
        (["--corpus", "twitter"], r"argument --corpus: invalid choice: 'twitter'"),
    ],
    ids=["missing-citation-file", "not-bibtex", "citation-folder", "license-with-space", "unknown-corpus"],
)
def test_bad_flags_are_named_before_anything_is_read_or_written(data_dir, tmp_path, capsys, flags, message):
    (tmp_path / "notes.bib").write_text("see our paper\n", encoding="utf-8")
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    with pytest.raises(SystemExit) as exit_info:
        main(["--data_dir", str(data_dir), "--output_dir", str(tmp_path / "export"), *flags])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert re.search(message, error), error
    assert not (tmp_path / "export").exists()


# --- the Python API ----------------------------------------------------------------------------


def test_export_parquet_takes_name_license_and_citation(data_dir, tmp_path):
    dataset = load_twitter_mner(data_dir)
    card = export_parquet(
        dataset, tmp_path / "export", source="ours", name="Ours", license="apache-2.0", citation=OWN_CITATION
    ).read_text(encoding="utf-8")
    assert (card_yaml(card)["pretty_name"], card_yaml(card)["license"]) == ("Ours", "apache-2.0")
    assert "@article{doe2026tweets" in card
    bare = export_parquet(dataset, tmp_path / "bare", source="ours").read_text(encoding="utf-8")
    assert card_yaml(bare)["pretty_name"] == "ours" and "license" not in card_yaml(bare) and "## Citation" not in bare


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"license": "MIT License"}, r"license must be a Hub license id .*got 'MIT License'"),
        (
            {"citation": "Doe (2026). Our tweets."},
            r"citation must hold a BibTeX entry .*got 'Doe \(2026\)\. Our tweets\.'",
        ),
        ({"name": " "}, r"name must be a non-empty line of text, got ' '"),
        ({"name": "two\nlines"}, r"name must be a non-empty line of text, got 'two\\nlines'"),
        ({"corpus": "twitter"}, r"corpus must be one of \['demo', 'twitter-2015', 'twitter-2017'\], got 'twitter'"),
    ],
)
def test_export_parquet_names_a_bad_card_argument_and_writes_nothing(data_dir, tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message):
        export_parquet(load_twitter_mner(data_dir), tmp_path / "export", source="ours", **arguments)
    assert not (tmp_path / "export").exists()
