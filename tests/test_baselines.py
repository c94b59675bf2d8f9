"""The peers that benchmarks/quality.py sets beside ACN refuse settings under which they would score nothing."""

import pytest

from acn_mner.baselines import train_token_classification


def test_token_classification_needs_an_epoch():
    with pytest.raises(ValueError, match="num_epochs must be at least 1, got 0"):  # before anything is loaded
        train_token_classification(corpus=None, model_path="unused", metric=None, num_epochs=0)
