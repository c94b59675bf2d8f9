"""A corpus as the Parquet folder `DatasetDict.push_to_hub` would upload (shards and card), written atomically, and
its upload to the Hub."""

import math
import re
from collections.abc import Iterable
from pathlib import Path

from datasets import Dataset, DatasetDict
from huggingface_hub import HfApi

from .atomic import atomic_path
from .dataset_card import corpus_card, dataset_card

MAX_SHARD_BYTES = 500 * 2**20  # push_to_hub's default shard size


# --- Parquet export ----------------------------------------------------------------------------


def shard_pattern(splits: Iterable[str]) -> re.Pattern:
    """The names `write_split_shards` gives; the only files of ``data/`` an export replaces or removes."""
    return re.compile(rf"(?:{'|'.join(map(re.escape, splits))})-\d{{5}}-of-\d{{5}}\.parquet")


def prepare_output_dir(output_dir: Path, splits: Iterable[str], overwrite: bool) -> list[Path]:
    """Check that the export may write into `output_dir`; return the shards of an earlier export to remove.

    Only files named like this exporter's shards are removed (stale ones would match the card's globs); anything
    else in the folder, in ``data/`` included, is left as it is.
    """
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise ValueError(f"output_dir {str(output_dir)!r} is not empty; pass overwrite=True to replace its data")
    data_dir = output_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    pattern = shard_pattern(splits)
    return [path for path in data_dir.iterdir() if path.is_file() and pattern.fullmatch(path.name)]


def write_split_shards(part: Dataset, data_dir: Path, split: str) -> list[Path]:
    num_shards = max(1, math.ceil(part.data.nbytes / MAX_SHARD_BYTES))
    paths = []
    for index in range(num_shards):
        path = data_dir / f"{split}-{index:05d}-of-{num_shards:05d}.parquet"
        with atomic_path(path) as temporary:
            part.shard(num_shards, index, contiguous=True).to_parquet(temporary)
        paths.append(path)
    return paths


def export_parquet(
    dataset: DatasetDict,
    output_dir: str | Path,
    *,
    source: str,
    corpus: str | None = None,
    name: str | None = None,
    license: str | None = None,
    citation: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``data/<split>-NNNNN-of-NNNNN.parquet`` (images embedded) and ``README.md``, the files and card that
    `DatasetDict.push_to_hub` would upload; return the card path.

    The card's name, license and citation are those of `corpus` (a key of `CORPORA`), if given, replaced by `name`
    (the card's title and ``pretty_name``), `license` (a Hub license id) and `citation` (BibTeX text) where those are
    given. Without `corpus`, the card is named `name` (default: `source`) and claims no license and no citation that
    it is not given (`dataset_card.corpus_card`).

    Every file is written under a temporary name and renamed into place; with `overwrite`, the shards of an
    earlier export that this one does not rewrite are removed, and no other file.
    """
    card = corpus_card(corpus, source=source, name=name, license=license, citation=citation)
    output_dir = Path(output_dir)
    earlier = prepare_output_dir(output_dir, dataset.keys(), overwrite)
    shards = {split: write_split_shards(part, output_dir / "data", split) for split, part in dataset.items()}
    written = {path for paths in shards.values() for path in paths}
    for path in earlier:
        if path not in written:
            path.unlink()
    card_path = output_dir / "README.md"
    with atomic_path(card_path) as temporary:
        dataset_card(dataset, shards, source, card).save(temporary)
    return card_path


def exported_files(output_dir: Path, splits: Iterable[str]) -> list[str]:
    """The card and this export's shards, relative to `output_dir`; other files of the folder are not the export's."""
    pattern = shard_pattern(splits)
    shards = sorted(f"data/{path.name}" for path in (output_dir / "data").iterdir() if pattern.fullmatch(path.name))
    return ["README.md", *shards]


def push_folder_to_hub(output_dir: Path, repo_id: str, splits: Iterable[str], private: bool = False) -> None:
    """Upload the export (card and shards, as `DatasetDict.push_to_hub` would) in one commit that also deletes the
    remote shards of an earlier export."""
    api = HfApi()
    repo_id = api.create_repo(repo_id, repo_type="dataset", private=private or None, exist_ok=True).repo_id
    api.upload_folder(
        folder_path=output_dir,
        repo_id=repo_id,
        repo_type="dataset",
        allow_patterns=exported_files(output_dir, splits),  # names without glob characters match only themselves
        delete_patterns=["data/*"],
        commit_message="Export with dataset_script/twitter_mner.py",
    )
