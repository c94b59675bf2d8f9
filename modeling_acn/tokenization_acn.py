"""Word and character tokenizer for ACN (Zhang et al., AAAI 2018).

Tweets are split into words with their character offsets, each word is looked up in a word vocabulary
built from the training corpus (after tweet normalisation), and its characters in a character vocabulary
built from the same corpus. Pre-trained word vectors in GloVe/word2vec text format can be turned into an
embedding matrix for the vocabulary.
"""

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import regex
import torch
from transformers import BatchEncoding, PreTrainedTokenizer


VOCAB_FILES_NAMES = {"vocab_file": "vocab.json", "char_vocab_file": "char_vocab.json"}

PAD_ID = 0
UNK_ID = 1
URL_PLACEHOLDER = "<url>"  # the placeholders GloVe's Twitter vectors were trained with
USER_PLACEHOLDER = "<user>"
CORPUS_OPTIONS = (
    "do_lower_case",
    "replace_urls",
    "replace_users",
    "replace_digits",
    "hashtags_as_words",
    "max_word_length",
    "min_char_width",
)
OOV_SCALE = 0.25  # paper: vectors of words missing from the embedding file are drawn from U(-0.25, 0.25)

# Retweets truncate links mid-word ("http://t.co…", "htt…"); the bare truncated forms are URLs too.
_TRUNCATED_URL = r"h(?:tt?(?:ps?)?)?:?/*…"
# One alternative per kind of tweet token, tried in order at each position; the last one takes any single
# non-space character, so every character outside whitespace lands in exactly one word.
_TWEET_WORD = regex.compile(
    "|".join(
        [
            r"(?:https?:|www\.)\S+?(?=[.,;:!?)\]\"']*(?:\s|$))",  # URL, without trailing sentence punctuation
            _TRUNCATED_URL,
            r"[@#]\w+",  # @mention, #hashtag
            r"&\w+",  # HTML entity, kept as the corpora keep it ("&amp" then ";")
            r"(?=[\p{Extended_Pictographic}\p{Regional_Indicator}])\X",  # one emoji with its ZWJ/skin/flag parts
            r"\w+(?:-\w+)*",  # word; hyphenated compounds stay whole
            r"([^\w\s])\1*",  # run of one punctuation mark ("...", "!!!")
            r"\S",  # anything else, one character
        ]
    )
)
_URL = regex.compile(r"(?:https?:|www\.)\S*|" + _TRUNCATED_URL)
_USER = regex.compile(r"@\w+")
_HASHTAG = regex.compile(r"#\w+")
_DIGIT = regex.compile(r"\d")


@dataclass(frozen=True)
class AcnEmbeddingCoverage:
    """How many vocabulary words an embedding file covered (special tokens are not counted).

    Attributes:
        found: words that received a pre-trained vector (`exact + lowercased`).
        total: words in the vocabulary, special tokens excluded.
        exact: words found under their own (normalised) form.
        lowercased: words found only under their lowercase form.
        dim: size of the vectors.
    """

    found: int
    total: int
    exact: int
    lowercased: int
    dim: int

    @property
    def ratio(self) -> float:
        return self.found / self.total if self.total else 0.0


class AcnTokenizer(PreTrainedTokenizer):
    """Word + character tokenizer for tweets.

    Ids: word `[PAD]` = 0, `[UNK]` = 1; characters likewise (char pad 0, char unk 1). Words are looked up after
    normalisation (`normalize`): URLs -> `<url>`, @mentions -> `<user>`, optionally digits -> `0`, `#word` ->
    `word` (`hashtags_as_words`), then lowercase. Characters keep their case and the `#`, since capitalisation is
    a strong cue for named entities; they see the same placeholder and digit replacements as the word lookup.

    Build a vocabulary with `AcnTokenizer.from_corpus(train_sentences)`; reload one with `from_pretrained`.

    Args:
        vocab_file: JSON `{word: id}` written by `save_pretrained`.
        char_vocab_file: JSON `{char: id}` written by `save_pretrained`.
        words: vocabulary words (normalised) after the two special tokens; alternative to `vocab_file`.
        chars: vocabulary characters after the two special entries; alternative to `char_vocab_file`.
        do_lower_case: lowercase words for the vocabulary lookup.
        replace_urls: map URLs to `<url>`.
        replace_users: map @mentions to `<user>`.
        replace_digits: map every digit to `0`.
        hashtags_as_words: look a hashtag up under its word (`#NBA` shares `NBA`'s vector; a quarter of Twitter-2015's
            training hashtags are entities). `from_corpus` turns it on (chosen on Twitter-2015 dev; see the README);
            off here, so that a tokenizer saved before the option existed reloads unchanged.
        max_word_length: characters kept per word; the rest are cut.
        min_char_width: smallest width of the character axis, so the widest char-CNN kernel always fits.
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "char_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: str | None = None,
        char_vocab_file: str | None = None,
        words: Iterable[str] | None = None,
        chars: Iterable[str] | None = None,
        do_lower_case: bool = True,
        replace_urls: bool = True,
        replace_users: bool = True,
        replace_digits: bool = False,
        hashtags_as_words: bool = False,
        max_word_length: int = 30,  # paper: words are cut to 30 characters
        min_char_width: int = 4,  # the widest char-CNN kernel
        pad_token: str = "[PAD]",
        unk_token: str = "[UNK]",
        **kwargs,
    ):
        if max_word_length < 1:
            raise ValueError(f"max_word_length must be at least 1, got {max_word_length}")
        if min_char_width < 1:
            raise ValueError(f"min_char_width must be at least 1, got {min_char_width}")
        self.do_lower_case = do_lower_case
        self.replace_urls = replace_urls
        self.replace_users = replace_users
        self.replace_digits = replace_digits
        self.hashtags_as_words = hashtags_as_words
        self.max_word_length = max_word_length
        self.min_char_width = min_char_width
        specials = (str(pad_token), str(unk_token))  # AddedToken objects when reloaded
        self._vocab = _load_or_build_vocab(vocab_file, words, *specials)
        self._char_vocab = _load_or_build_vocab(char_vocab_file, chars, *specials)
        self._ids_to_words = list(self._vocab)
        super().__init__(
            do_lower_case=do_lower_case,
            replace_urls=replace_urls,
            replace_users=replace_users,
            replace_digits=replace_digits,
            hashtags_as_words=hashtags_as_words,
            max_word_length=max_word_length,
            min_char_width=min_char_width,
            pad_token=pad_token,
            unk_token=unk_token,
            **kwargs,
        )

    @classmethod
    def from_corpus(
        cls,
        sentences: Iterable[list[str]],
        min_freq: int = 1,
        extra_words: Iterable[str] | None = None,
        **options,
    ) -> "AcnTokenizer":
        """Build the word and character vocabularies from tokenised training sentences.

        Args:
            sentences: the training split only, one list of words per sentence.
            min_freq: smallest count (after normalisation) for a corpus word to enter the vocabulary.
            extra_words: words added after the corpus words whatever their count, e.g. the words of a
                pre-trained embedding file (`AcnTokenizer.embedding_file_words`). They do not extend the
                character vocabulary.
            **options: the normalisation and character options of `AcnTokenizer.__init__`; `hashtags_as_words`
                defaults to True here.
        """
        if min_freq < 1:
            raise ValueError(f"min_freq must be at least 1, got {min_freq}")
        unknown = sorted(set(options) - set(CORPUS_OPTIONS))
        if unknown:
            raise ValueError(f"unknown options {unknown}; from_corpus takes {list(CORPUS_OPTIONS)}")
        options.setdefault("hashtags_as_words", True)
        normalizer = cls(**options)
        word_counts, char_counts = normalizer._count(sentences)
        corpus_words = [word for word, count in _by_frequency(word_counts) if count >= min_freq]
        extra = [normalizer.normalize(word) for word in extra_words or ()]
        specials = {normalizer.pad_token, normalizer.unk_token}
        words = [word for word in dict.fromkeys(corpus_words + extra) if word not in specials]
        chars = [char for char, _ in _by_frequency(char_counts)]
        return cls(words=words, chars=chars, **options)

    def _count(self, sentences: Iterable[list[str]]) -> tuple[Counter, Counter]:
        word_counts, char_counts = Counter(), Counter()
        for index, sentence in enumerate(sentences):
            if isinstance(sentence, str):
                raise ValueError(f"sentences must be lists of words, got the str {sentence[:40]!r} at index {index}")
            for word in sentence:
                word_counts[self.normalize(word)] += 1
                char_counts.update(self.char_form(word))
        return word_counts, char_counts

    # ----------------------------------------------------------------------------------------- normalisation

    def char_form(self, word: str) -> str:
        """The word as its characters are read: placeholders and digit replacement applied, case kept."""
        if self.replace_urls and _URL.fullmatch(word):
            return URL_PLACEHOLDER
        if self.replace_users and _USER.fullmatch(word):
            return USER_PLACEHOLDER
        return _DIGIT.sub("0", word) if self.replace_digits else word

    def normalize(self, word: str) -> str:
        """The vocabulary key of a word: `char_form` without a hashtag's `#`, lowercased when `do_lower_case`."""
        form = self.char_form(word)
        if self.hashtags_as_words and _HASHTAG.fullmatch(form):
            form = form[1:]
        return form.lower() if self.do_lower_case else form

    @staticmethod
    def split_text(text: str) -> tuple[list[str], list[tuple[int, int]]]:
        """Split a raw tweet into words, keeping URLs, @mentions, #hashtags and emoji whole.

        Punctuation is split off words as the Twitter NER corpora do ("Obama's" -> "Obama", "'", "s").

        Returns:
            The words and their `(start, end)` character offsets, with `text[start:end] == word`.
        """
        matches = list(_TWEET_WORD.finditer(text))
        return [m.group() for m in matches], [m.span() for m in matches]

    # ------------------------------------------------------------------------------------------ vocabulary

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    @property
    def char_vocab_size(self) -> int:
        return len(self._char_vocab)

    def get_vocab(self) -> dict[str, int]:
        return {**self._vocab, **self._added_tokens_encoder}

    def get_char_vocab(self) -> dict[str, int]:
        return dict(self._char_vocab)

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return [self.normalize(word) for word in self.split_text(text)[0]]

    def _convert_token_to_id(self, token: str) -> int:
        return self._vocab.get(token, UNK_ID)

    def _convert_id_to_token(self, index: int) -> str:
        return self._ids_to_words[index] if 0 <= index < len(self._ids_to_words) else self.unk_token

    def word_ids_of(self, words: list[str]) -> list[int]:
        """Vocabulary ids of raw words (normalised first); unknown words get `[UNK]` = 1."""
        return [self._convert_token_to_id_with_added_voc(self.normalize(word)) for word in words]

    def char_ids_of(self, word: str) -> list[int]:
        """Character ids of one raw word, cut to `max_word_length`; unknown characters get 1."""
        return [self._char_vocab.get(char, UNK_ID) for char in self.char_form(word)[: self.max_word_length]]

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, str]:
        prefix = f"{filename_prefix}-" if filename_prefix else ""
        paths = []
        for file_id, vocab in (("vocab_file", self._vocab), ("char_vocab_file", self._char_vocab)):
            path = os.path.join(save_directory, prefix + self.vocab_files_names[file_id])
            with open(path, "w", encoding="utf-8") as f:
                json.dump(vocab, f, ensure_ascii=False, indent=0)
            paths.append(path)
        return tuple(paths)

    # ------------------------------------------------------------------------------------------- encoding

    def __call__(
        self,
        text: str | list[str] | list[list[str]],
        is_split_into_words: bool = False,
        padding: bool | str = True,
        truncation: bool = False,
        max_length: int | None = None,
        return_tensors: str | None = None,
        return_offsets_mapping: bool = False,
        return_words: bool = False,
    ) -> BatchEncoding:
        """Encode one tweet or a batch; the output always has a batch axis.

        Args:
            text: a raw tweet or a list of them; with `is_split_into_words=True`, a list of words or a list of
                such lists.
            padding: `True`/`"longest"` pads to the longest example, `"max_length"` to `max_length`.
            truncation: cut every example to `max_length` words.
            max_length: word limit for `truncation` and `padding="max_length"`.
            return_tensors: `None` for lists, `"pt"` for torch tensors, `"np"` for numpy arrays.
            return_offsets_mapping: add `offset_mapping`, each word's `(start, end)` in its tweet; for
                pre-split words the offsets point into the words joined by single spaces. Padding is `(0, 0)`.
            return_words: add `words`, the list of words of each example (never converted to tensors).

        Returns:
            A `BatchEncoding` with `input_ids` (batch, seq_len) int64, `char_ids` (batch, seq_len, char_len)
            int64 with `char_len = max(min_char_width, longest word kept)`, `attention_mask` (batch, seq_len)
            int64, and optionally `offset_mapping` (batch, seq_len, 2) and `words`.
        """
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        batch_words, batch_offsets = self._split_batch(text, is_split_into_words)
        if truncation:
            if max_length is None:
                raise ValueError("truncation=True needs max_length")
            batch_words = [words[:max_length] for words in batch_words]
            batch_offsets = [offsets[:max_length] for offsets in batch_offsets]
        seq_len = _padded_length([len(words) for words in batch_words], padding, max_length)
        data = self._pad_batch(batch_words, seq_len)
        if return_offsets_mapping:
            data["offset_mapping"] = [list(o) + [(0, 0)] * (seq_len - len(o)) for o in batch_offsets]
        encoding = BatchEncoding(data, tensor_type=return_tensors)
        if return_words:
            encoding["words"] = batch_words
        return encoding

    def _split_batch(self, text, is_split_into_words: bool) -> tuple[list[list[str]], list[list[tuple[int, int]]]]:
        examples = _as_batch(text, is_split_into_words)
        batch_words, batch_offsets = [], []
        for index, example in enumerate(examples):
            words, offsets = (example, _joined_offsets(example)) if is_split_into_words else self.split_text(example)
            if not words:
                raise ValueError(f"example {index} has no words: {example!r}")
            if "" in words:  # it would be tagged, and its zero-width offsets would glue its neighbours together
                raise ValueError(f"example {index}: word {list(words).index('')} is empty: {example!r}")
            batch_words.append(list(words))
            batch_offsets.append(offsets)
        return batch_words, batch_offsets

    def _pad_batch(self, batch_words: list[list[str]], seq_len: int) -> dict[str, list]:
        batch_chars = [[self.char_ids_of(word) for word in words] for words in batch_words]
        char_len = max([self.min_char_width] + [len(chars) for example in batch_chars for chars in example])
        input_ids, char_ids, attention_mask = [], [], []
        for words, chars in zip(batch_words, batch_chars):
            pad = seq_len - len(words)
            input_ids.append(self.word_ids_of(words) + [PAD_ID] * pad)  # (seq_len,)
            rows = [c + [PAD_ID] * (char_len - len(c)) for c in chars] + [[PAD_ID] * char_len] * pad
            char_ids.append(rows)  # (seq_len, char_len)
            attention_mask.append([1] * len(words) + [0] * pad)  # (seq_len,)
        return {"input_ids": input_ids, "char_ids": char_ids, "attention_mask": attention_mask}

    # ----------------------------------------------------------------------------------- pre-trained vectors

    @staticmethod
    def embedding_file_words(path: str | os.PathLike) -> Iterator[str]:
        """The words of a GloVe/word2vec text file, in file order (e.g. for `from_corpus(extra_words=...)`)."""
        for _, word, _ in _read_embedding_file(path):
            yield word

    def load_embeddings(
        self, path: str | os.PathLike, seed: int = 0
    ) -> tuple[torch.Tensor, AcnEmbeddingCoverage]:
        """Embedding matrix for this vocabulary from a GloVe/word2vec text file.

        Each vocabulary word takes the vector of the same word in the file; failing that, the vector of the
        first file word equal to it once both are lowercased (a lowercased vocabulary then still finds the
        cased words of a word2vec file). Words missing from the file, and `[UNK]`, get vectors drawn from
        U(-0.25, 0.25) with a generator seeded by `seed`; the `[PAD]` row is zero. An optional word2vec header
        line `count dim` is recognised.

        Returns:
            The (len(self), dim) float32 matrix and an `AcnEmbeddingCoverage`.

        Raises:
            ValueError: naming `file:line` for a line whose number of values differs from the others or whose
                values are not numbers.
        """
        vocab = {word: index for word, index in self.get_vocab().items() if index not in (PAD_ID, UNK_ID)}
        exact, folded, dim = _collect_vectors(path, vocab)
        generator = torch.Generator().manual_seed(seed)
        matrix = torch.empty(len(self), dim).uniform_(-OOV_SCALE, OOV_SCALE, generator=generator)  # (vocab, dim)
        matrix[PAD_ID] = 0.0
        found_exact = found_folded = 0
        for word, index in vocab.items():
            if word in exact:
                matrix[index] = torch.tensor(exact[word])  # (dim,)
                found_exact += 1
            elif word.lower() in folded:
                matrix[index] = torch.tensor(folded[word.lower()])  # (dim,)
                found_folded += 1
        coverage = AcnEmbeddingCoverage(found_exact + found_folded, len(vocab), found_exact, found_folded, dim)
        return matrix, coverage


AcnTokenizer.register_for_auto_class("AutoTokenizer")


def _load_or_build_vocab(path: str | None, entries: Iterable[str] | None, pad: str, unk: str) -> dict[str, int]:
    if path is not None and entries is not None:
        raise ValueError(f"give a vocabulary file or a list of entries, not both (file {path!r})")
    if path is None:
        vocab = {}
        for entry in [pad, unk, *(entries or ())]:
            if entry in vocab:
                raise ValueError(f"duplicate vocabulary entry {entry!r}")
            vocab[entry] = len(vocab)
        return vocab
    with open(path, encoding="utf-8") as f:
        vocab = json.load(f)
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise ValueError(f"{path}: ids must run from 0 to {len(vocab) - 1} without gaps")
    if vocab.get(pad) != PAD_ID or vocab.get(unk) != UNK_ID:
        raise ValueError(f"{path}: {pad!r} must have id {PAD_ID} and {unk!r} id {UNK_ID}")
    return dict(sorted(vocab.items(), key=lambda item: item[1]))


def _by_frequency(counts: Counter) -> list[tuple[str, int]]:
    """Most frequent first, ties in alphabetical order, so vocabularies do not depend on corpus order."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _as_batch(text, is_split_into_words: bool) -> list:
    if is_split_into_words:
        if not isinstance(text, (list, tuple)) or not text:
            raise ValueError(f"is_split_into_words=True needs a non-empty list of words, got {text!r}")
        if all(isinstance(word, str) for word in text):
            return [text]
        if all(isinstance(words, (list, tuple)) and all(isinstance(w, str) for w in words) for words in text):
            return list(text)
        raise ValueError("is_split_into_words=True needs a list of str or a list of lists of str")
    if isinstance(text, str):
        return [text]
    if isinstance(text, (list, tuple)) and text and all(isinstance(t, str) for t in text):
        return list(text)
    raise ValueError(
        f"text must be a str or a non-empty list of str (pass is_split_into_words=True for words), got {text!r}"
    )


def _joined_offsets(words: list[str]) -> list[tuple[int, int]]:
    """Offsets of the words in `" ".join(words)`."""
    offsets, start = [], 0
    for word in words:
        offsets.append((start, start + len(word)))
        start += len(word) + 1
    return offsets


def _padded_length(lengths: list[int], padding: bool | str, max_length: int | None) -> int:
    if padding is True or padding == "longest":
        return max(lengths)
    if padding != "max_length":
        raise ValueError(f"padding must be True, 'longest' or 'max_length', got {padding!r}")
    if max_length is None:
        raise ValueError("padding='max_length' needs max_length")
    if max(lengths) > max_length:
        raise ValueError(f"an example has {max(lengths)} words, more than max_length={max_length}; set truncation")
    return max_length


def _read_embedding_file(path: str | os.PathLike) -> Iterator[tuple[str, str, list[str]]]:
    """Yield `("file:line", word, values)` per vector line, checking every line has the same number of values."""
    dim = None
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            fields = line.rstrip().split(" ")
            location = f"{path}:{number}"
            if fields == [""]:
                continue
            if number == 1 and len(fields) == 2 and all(field.isdigit() for field in fields):
                dim = int(fields[1])  # word2vec header: "count dim"
                continue
            if len(fields) < 2:
                raise ValueError(f"{location}: expected a word followed by its vector, got {line.strip()[:40]!r}")
            dim = len(fields) - 1 if dim is None else dim
            if len(fields) - 1 != dim:
                raise ValueError(f"{location}: expected {dim} values, got {len(fields) - 1}")
            yield location, fields[0], fields[1:]


def _collect_vectors(
    path: str | os.PathLike, vocab: dict[str, int]
) -> tuple[dict[str, list[float]], dict[str, list[float]], int]:
    """Vectors of the vocabulary words found as such (`exact`) and by lowercase form (`folded`), and the size."""
    lowered = {word.lower() for word in vocab}
    exact, folded, dim = {}, {}, None
    for location, word, values in _read_embedding_file(path):
        dim = len(values)
        key = word.lower()
        take_exact = word in vocab and word not in exact
        take_folded = key in lowered and key not in folded
        if take_exact or take_folded:
            vector = _parse_vector(values, location)
            if take_exact:
                exact[word] = vector
            if take_folded:
                folded[key] = vector
    if dim is None:
        raise ValueError(f"{path}: no vectors found")
    return exact, folded, dim


def _parse_vector(values: list[str], location: str) -> list[float]:
    try:
        return [float(value) for value in values]
    except ValueError:
        raise ValueError(f"{location}: values must be numbers, got {' '.join(values)[:40]!r}") from None


__all__ = ["AcnEmbeddingCoverage", "AcnTokenizer"]
