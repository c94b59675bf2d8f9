"""A classic peer: a linear-chain CRF over hand-made lexical, shape and context-window features (sklearn-crfsuite)."""

import re

import sklearn_crfsuite

CONTEXT = (-2, -1, 1, 2)  # neighbouring words whose features join the current word's
C1, C2 = 0.1, 0.1  # L1 and L2 penalties, crfsuite's usual starting point
MAX_ITERATIONS = 150


def word_shape(word: str) -> str:
    """Xx, x, X, d and punctuation classes, runs collapsed: `iPhone7` -> `xXxd`."""
    shape = re.sub("[A-Z]", "X", re.sub("[a-z]", "x", re.sub("[0-9]", "d", word)))
    return re.sub(r"(.)\1+", r"\1", shape)


def word_features(word: str, prefix: str) -> dict:
    lower = word.lower()
    return {
        f"{prefix}lower": lower,
        f"{prefix}shape": word_shape(word),
        f"{prefix}title": word.istitle(),
        f"{prefix}upper": word.isupper(),
        f"{prefix}mention": word.startswith("@"),
        f"{prefix}hashtag": word.startswith("#"),
    }


def token_features(words: list[str], index: int) -> dict:
    word = words[index]
    features = {"bias": 1.0, **word_features(word, ""), "suffix3": word[-3:].lower(), "prefix3": word[:3].lower()}
    features.update({"first": index == 0, "last": index == len(words) - 1})
    for offset in CONTEXT:
        position = index + offset
        if 0 <= position < len(words):
            features.update(word_features(words[position], f"{offset:+d}:"))
    return features


def sentence_features(words: list[str]) -> list[dict]:
    return [token_features(words, index) for index in range(len(words))]


def train_feature_crf(corpus) -> list[list[str]]:
    """Train on the training split and tag the test split; returns predicted tag sequences."""
    names = corpus["train"].features["ner_tags"].feature.names
    crf = sklearn_crfsuite.CRF(algorithm="lbfgs", c1=C1, c2=C2, max_iterations=MAX_ITERATIONS, all_possible_transitions=True)
    crf.fit(
        [sentence_features(words) for words in corpus["train"]["tokens"]],
        [[names[tag] for tag in tags] for tags in corpus["train"]["ner_tags"]],
    )
    return crf.predict([sentence_features(words) for words in corpus["test"]["tokens"]])
