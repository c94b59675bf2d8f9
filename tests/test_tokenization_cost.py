"""The tweet tokenizer's cost is linear in the input, on pathological shapes too (a long punctuation run after a URL
scheme took minutes), and the linear URL rule splits exactly as the earlier, backtracking one did."""

import random
import time

import pytest
import regex

from modeling_acn import AcnTokenizer
from modeling_acn.tokenization_acn import TWEET_WORD, URL_WORD

# The URL alternative before it was made linear: a lazy run, then a lookahead for punctuation up to a space.
BACKTRACKING_URL = r"(?:https?:|www\.)\S+?(?=[.,;:!?)\]\"']*(?:\s|$))"
PATHOLOGICAL = {
    "scheme, dots, a letter": lambda n: "see http:" + "." * n + "x now",
    "scheme, quotes": lambda n: "http:x" + "'\"" * n + "y",
    "scheme, dot-letter pairs": lambda n: "http:" + ".x" * n,
    "www, exclamation marks": lambda n: "www." + "!" * n + " ok",
    "hashes": lambda n: "#" * n,
    "hyphenated letters": lambda n: "a-" * n,
    "h and slashes": lambda n: "h" + "/" * n,
    "emoji joiners": lambda n: "\U0001f44d\u200d" * n,
    "truncated-link ellipses": lambda n: "http://t.co" + "\u2026" * n,
    "mentions": lambda n: "@a" * n,
}


MEASURABLE_SECONDS = 0.05
MAX_LENGTH = 800_000


@pytest.fixture(scope="module")
def tokenizer():
    return AcnTokenizer.from_corpus([["a"]])


def split_seconds(tokenizer, make, length: int) -> float:
    """The fewest seconds of three runs of building the tweet `make(length)` and splitting it."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        tokenizer.split_text(make(length))
        times.append(time.perf_counter() - started)
    return min(times)


@pytest.mark.bad_input(
    'a tweet built to make the tokenizer backtrack (`"see http:" + "." * 100000 + "x now"`, and 9 other shapes)',
    "split in time linear in its length (the URL rule took minutes on it)",
)
@pytest.mark.parametrize("shape", sorted(PATHOLOGICAL))
def test_splitting_time_grows_linearly_on_pathological_tweets(tokenizer, shape):
    make = PATHOLOGICAL[shape]
    length = 25_000
    small = split_seconds(tokenizer, make, length)
    while small < MEASURABLE_SECONDS and length < MAX_LENGTH:  # times of a few ms are mostly noise on a shared machine
        length *= 2
        small = split_seconds(tokenizer, make, length)
    large = split_seconds(tokenizer, make, 4 * length)
    # linear: about 4x the time; quadratic: 16x
    assert large < 10 * small, f"{shape}: 4x the input ({4 * length}) took {large / small:.1f}x the time"


def test_the_linear_url_rule_splits_as_the_backtracking_one_did():
    """Brute force over random short tweets from an alphabet of URL schemes, punctuation, letters and spaces."""
    old_pattern = TWEET_WORD.pattern.replace(URL_WORD, BACKTRACKING_URL, 1)
    old = regex.compile(old_pattern)
    pieces = [
        "http:",
        "https:",
        "www.",
        "h",
        "t",
        "x",
        ".",
        ",",
        ";",
        ":",
        "!",
        "?",
        ")",
        "]",
        '"',
        "'",
        " ",
        "/",
        "…",
        "#",
        "-",
    ]
    rng = random.Random(0)
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
        expected = [match.group() for match in old.finditer(text)]
        assert AcnTokenizer.split_text(text)[0] == expected, repr(text)
