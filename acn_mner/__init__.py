"""acn-mner's library: corpus reading and export, the image feature cache, training and evaluation helpers, and the
command-line tools (`acn-predict`, `acn-explain`, `acn-dataset`). The model itself is the `modeling_acn` package,
which never imports this one.

One module per concern: `corpus` (the Twitter format as a `DatasetDict`), `dataset_card`, `export` (Parquet and the
Hub), `feature_cache`, `demo_corpus`, `data` (corpora as model rows), `train`, `checkpoint`, `evaluation`,
`model_card`, `baselines`, `atomic` (writes that never leave a half-written file), and the commands `predict`,
`explain` and `dataset_command`.
"""

from modeling_acn import __version__

__all__ = ["__version__"]
