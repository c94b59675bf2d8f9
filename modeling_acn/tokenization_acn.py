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
from typing import Any

import regex
import torch
from transformers import AutoTokenizer, BatchEncoding, PreTrainedTokenizer, PreTrainedTokenizerBase

VOCAB_FILES_NAMES = {"vocab_file": "vocab.json", "char_vocab_file": "char_vocab.json"}

PAD_ID = 0
UNK_ID = 1
URL_PLACEHOLDER = "<url>"  # the placeholders GloVe's Twitter vectors were trained with
USER_PLACEHOLDER = "<user>"
SUBWORD_URL = "url"  # a URL as a pretrained encoder reads it (`subword_word_forms`): one word, not 10-20 subwords
CORPUS_OPTIONS = (
    "do_lower_case",
    "replace_urls",
    "replace_users",
    "replace_digits",
    "hashtags_as_words",
    "max_word_length",
    "min_char_width",
    "subword_tokenizer",
    "subword_window",
    "subword_word_forms",
)
SUBWORD_TOKENIZER_FOLDER = "subword_tokenizer"  # where save_pretrained puts a pretrained encoder's tokenizer
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision")
OOV_SCALE = 0.25  # paper: vectors of words missing from the embedding file are drawn from U(-0.25, 0.25)

# Retweets truncate links mid-word ("http://t.co…", "htt…"); the bare truncated forms are URLs too.
_TRUNCATED_URL = r"h(?:tt?(?:ps?)?)?:?/*…"
# A URL without its trailing sentence punctuation: up to the last character that is neither space nor such punctuation
# (at least one character after the scheme). Runs of punctuation and other characters alternate, and the two classes
# are disjoint, so the match is found in one pass: a lazy `\S+?` with a lookahead for "punctuation then space" took
# time quadratic in the length of a punctuation run ("http:" + 100,000 dots: minutes).
_URL_PUNCTUATION = r"[.,;:!?)\]\"']"
URL_WORD = rf"(?:https?:|www\.)(?:(?:{_URL_PUNCTUATION}*[^\s.,;:!?)\]\"'])+|\S)"
# One alternative per kind of tweet token, tried in order at each position; the last one takes any single
# non-space character, so every character outside whitespace lands in exactly one word.
TWEET_WORD = regex.compile(
    "|".join(
        [
            URL_WORD,
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
            training hashtags are entities). `from_corpus` turns it on (chosen on Twitter-2015 dev; see
            docs/benchmarks.md); off here, so that a tokenizer saved before the option existed reloads unchanged.
        max_word_length: characters kept per word; the rest are cut.
        min_char_width: smallest width of the character axis, so the widest char-CNN kernel always fits.
        subword_tokenizer: the fast tokenizer of a pretrained text encoder (`AcnConfig.text_encoder`); each call
            then also encodes the words for it (`subword_ids`, `subword_attention_mask`, `subword_to_word`).
            `save_pretrained` writes it to the `subword_tokenizer/` subfolder and `from_pretrained` reads it back.
        subword_window: most subwords per encoder call (the model's `text_encoder_window`); defaults to the
            subword tokenizer's `model_max_length`. A longer tweet is split between words into pieces that fit.
        subword_word_forms: give the pretrained encoder URLs as the word `url` and hashtags without their `#`
            (`subword_form`), as the word lookup does: a t.co link is 10-20 meaningless subwords, and `#Oscars`
            would otherwise be read from its `#`. Off by default: with MiniLM-L6 it cost 0.34 dev F1 on
            Twitter-2015 (see docs/benchmarks.md), although it cuts the encoder's input by 41%.
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
        subword_tokenizer: PreTrainedTokenizerBase | None = None,
        subword_window: int | None = None,
        subword_word_forms: bool = False,
        pad_token: str = "[PAD]",
        unk_token: str = "[UNK]",
        **kwargs: Any,
    ) -> None:
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
        self.subword_tokenizer = subword_tokenizer
        self.subword_window = _subword_window(subword_tokenizer, subword_window)
        self.subword_word_forms = subword_word_forms
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
            subword_window=self.subword_window,
            subword_word_forms=subword_word_forms,
            pad_token=pad_token,
            unk_token=unk_token,
            **kwargs,
        )

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any
    ) -> "AcnTokenizer":
        """As `PreTrainedTokenizer.from_pretrained`, with the subword tokenizer saved beside the vocabularies."""
        tokenizer = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        if tokenizer.subword_window is not None:  # saved with a subword tokenizer
            subfolder = "/".join(part for part in (kwargs.get("subfolder"), SUBWORD_TOKENIZER_FOLDER) if part)
            hub = {key: kwargs[key] for key in HUB_KWARGS if key in kwargs}
            trust = bool(kwargs.get("trust_remote_code"))  # the folder's own code runs only when its loader was told so
            tokenizer.subword_tokenizer = AutoTokenizer.from_pretrained(
                pretrained_model_name_or_path, subfolder=subfolder, trust_remote_code=trust, **hub
            )
        return tokenizer

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> tuple[str, ...]:
        """As `PreTrainedTokenizer.save_pretrained`; a subword tokenizer goes to the `subword_tokenizer/` subfolder."""
        files = super().save_pretrained(save_directory, *args, **kwargs)
        if self.subword_tokenizer is None:
            return files
        return (*files, *self.subword_tokenizer.save_pretrained(os.path.join(save_directory, SUBWORD_TOKENIZER_FOLDER)))

    @staticmethod
    def load_subword_tokenizer(name_or_path: str | os.PathLike, **kwargs: Any) -> PreTrainedTokenizerBase:
        """A pretrained encoder's fast tokenizer, ready for words (byte-level BPE ones get `add_prefix_space`); the
        folder's own code runs only with `trust_remote_code=True`."""
        kwargs.setdefault("trust_remote_code", False)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
        if getattr(tokenizer, "add_prefix_space", True) is False:  # RoBERTa-style: words need their leading space
            tokenizer = AutoTokenizer.from_pretrained(name_or_path, add_prefix_space=True, **kwargs)
        return tokenizer

    @classmethod
    def from_corpus(
        cls,
        sentences: Iterable[list[str]],
        min_freq: int = 1,
        extra_words: Iterable[str] | None = None,
        **options: Any,
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

    def _count(self, sentences: Iterable[list[str]]) -> tuple[Counter[str], Counter[str]]:
        word_counts: Counter[str] = Counter()
        char_counts: Counter[str] = Counter()
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
    def subword_form(word: str) -> str:
        """The word as `subword_word_forms` gives it to a pretrained encoder: a URL becomes `url`, `#word` becomes
        `word`; every other word, @mentions included, is left as it is (the encoder's own casing applies)."""
        if _URL.fullmatch(word):
            return SUBWORD_URL
        return word[1:] if _HASHTAG.fullmatch(word) else word

    @staticmethod
    def split_text(text: str) -> tuple[list[str], list[tuple[int, int]]]:
        """Split a raw tweet into words, keeping URLs, @mentions, #hashtags and emoji whole.

        Punctuation is split off words as the Twitter NER corpora do ("Obama's" -> "Obama", "'", "s").

        Returns:
            The words and their `(start, end)` character offsets, with `text[start:end] == word`.
        """
        matches = list(TWEET_WORD.finditer(text))
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

    def _tokenize(self, text: str, **kwargs: Any) -> list[str]:
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

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
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
            int64, and optionally `offset_mapping` (batch, seq_len, 2) and `words`. With a subword tokenizer,
            also `subword_ids`, `subword_attention_mask` and `subword_to_word` (batch, subwords) int64, the last
            giving each subword's 1-based word position (0: special token or padding). Every word has at least
            one subword (a word the subword tokenizer drops is read as its unknown token), so every word is
            scored; a tweet longer than `subword_window` comes as pieces, each padded to the window but the last.
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
        if self.subword_tokenizer is not None:
            data.update(self._subword_batch(batch_words))
        elif self.subword_window is not None:
            raise ValueError(
                "this tokenizer was saved with a subword tokenizer but has none: load it with from_pretrained"
            )
        if return_offsets_mapping:
            data["offset_mapping"] = [list(o) + [(0, 0)] * (seq_len - len(o)) for o in batch_offsets]
        encoding = BatchEncoding(data, tensor_type=return_tensors)
        if return_words:
            encoding["words"] = batch_words
        return encoding

    def _split_batch(
        self, text: str | list[str] | list[list[str]], is_split_into_words: bool
    ) -> tuple[list[list[str]], list[list[tuple[int, int]]]]:
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
        for words, chars in zip(batch_words, batch_chars, strict=True):
            pad = seq_len - len(words)
            input_ids.append(self.word_ids_of(words) + [PAD_ID] * pad)  # (seq_len,)
            rows = [c + [PAD_ID] * (char_len - len(c)) for c in chars] + [[PAD_ID] * char_len] * pad
            char_ids.append(rows)  # (seq_len, char_len)
            attention_mask.append([1] * len(words) + [0] * pad)  # (seq_len,)
        return {"input_ids": input_ids, "char_ids": char_ids, "attention_mask": attention_mask}

    def _subword_batch(self, batch_words: list[list[str]]) -> dict[str, list]:
        if self.subword_word_forms:
            batch_words = [[self.subword_form(word) for word in words] for words in batch_words]
        rows = [self._subword_pieces(words) for words in batch_words]
        length = max(len(ids) for ids, _ in rows)
        return {
            "subword_ids": [ids + [self._subword_pad_id] * (length - len(ids)) for ids, _ in rows],
            "subword_attention_mask": [
                [1 if word >= 0 else 0 for word in words] + [0] * (length - len(words)) for _, words in rows
            ],
            "subword_to_word": [[max(word, 0) for word in words] + [0] * (length - len(words)) for _, words in rows],
        }

    def _subword_pieces(self, words: list[str]) -> tuple[list[int], list[int]]:
        """One tweet's subword ids and, per subword, its 1-based word position (0: special token, -1: padding
        inside a long tweet's pieces). A tweet over the window is split between words into pieces."""
        # _subword_batch runs only with a subword tokenizer, and __init__ then set the window
        assert self.subword_tokenizer is not None and self.subword_window is not None
        ids, positions = self._encode_piece(words, 0)
        counts = Counter(positions)
        if any(counts[position] == 0 for position in range(1, len(words) + 1)):  # a word without subwords
            unk = self.subword_tokenizer.unk_token
            words = [word if counts[index + 1] else unk for index, word in enumerate(words)]
            ids, positions = self._encode_piece(words, 0)
            counts = Counter(positions)
        if len(ids) <= self.subword_window:
            return ids, positions
        ids, positions, start = [], [], 0
        room = self.subword_window - self.subword_tokenizer.num_special_tokens_to_add()
        while start < len(words):
            end, used = start + 1, counts[start + 1]
            while end < len(words) and used + counts[end + 1] <= room:
                used, end = used + counts[end + 1], end + 1
            piece_ids, piece_positions = self._encode_piece(words[start:end], start)
            if end < len(words):  # every piece but the last fills its window
                shortfall = self.subword_window - len(piece_ids)
                piece_ids, piece_positions = (
                    piece_ids + [self._subword_pad_id] * shortfall,
                    piece_positions + [-1] * shortfall,
                )
            ids, positions, start = ids + piece_ids, positions + piece_positions, end
        return ids, positions

    def _encode_piece(self, words: list[str], first_position: int) -> tuple[list[int], list[int]]:
        """Words with the encoder's special tokens, and each subword's 1-based word position counted from
        `first_position`; a single word too long for the window keeps its first subwords (it is tagged from them)."""
        assert self.subword_tokenizer is not None and self.subword_window is not None  # as in _subword_pieces
        ids, word_ids = self._subword_encoding(words)
        positions = [0 if word is None else first_position + word + 1 for word in word_ids]
        if len(words) == 1 and len(ids) > self.subword_window:
            keep = self.subword_window - 1  # the end token stays
            ids, positions = ids[:keep] + ids[-1:], positions[:keep] + positions[-1:]
        return ids, positions

    def _subword_encoding(self, words: list[str]) -> tuple[list[int], list[int | None]]:
        """The subword tokenizer's ids for pre-split words, with special tokens, and each id's word index (None:
        special token). Read from its Rust tokenizer (`backend_tokenizer`) directly, a copy without the padding and
        truncation that a tokenizer.json may preset, which is what the transformers tokenizer itself runs with
        neither asked for: the same ids (tests/test_tokenization_fast.py checks them on every Twitter-2015 tweet)
        without the wrapper's cost per call. A tokenizer without one is called as it is."""
        assert self.subword_tokenizer is not None  # called only with a subword tokenizer
        source = getattr(self.subword_tokenizer, "backend_tokenizer", None)
        if source is None:
            encoding = self.subword_tokenizer(words, is_split_into_words=True, add_special_tokens=True)
            return list(encoding["input_ids"]), encoding.word_ids()
        cached = getattr(self, "_subword_backend", None)
        if cached is None or cached[0] is not source:
            backend = type(source).from_str(source.to_str())
            backend.no_padding()
            backend.no_truncation()
            self._subword_backend = cached = (source, backend)
        encoding = cached[1].encode(words, is_pretokenized=True, add_special_tokens=True)
        return encoding.ids, encoding.word_ids

    @property
    def _subword_pad_id(self) -> int:
        assert self.subword_tokenizer is not None  # read only when encoding subwords
        return self.subword_tokenizer.pad_token_id or 0

    # ----------------------------------------------------------------------------------- pre-trained vectors

    @staticmethod
    def embedding_file_words(path: str | os.PathLike) -> Iterator[str]:
        """The words of a GloVe/word2vec text file, in file order (e.g. for `from_corpus(extra_words=...)`)."""
        for _, word, _ in _read_embedding_file(path):
            yield word

    def load_embeddings(self, path: str | os.PathLike, seed: int = 0) -> tuple[torch.Tensor, AcnEmbeddingCoverage]:
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
    vocab: dict[str, int]
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


def _subword_window(subword_tokenizer: PreTrainedTokenizerBase | None, subword_window: int | None) -> int | None:
    if subword_tokenizer is not None and not subword_tokenizer.is_fast:
        raise ValueError(
            f"subword_tokenizer must be a fast tokenizer (word alignment), got {type(subword_tokenizer).__name__}"
        )
    if subword_window is None and subword_tokenizer is not None:
        subword_window = subword_tokenizer.model_max_length
        if subword_window > 100_000:  # transformers' "no limit" sentinel
            raise ValueError(f"{subword_tokenizer.name_or_path} states no model_max_length: pass subword_window")
    if subword_window is not None and subword_window < 3:
        raise ValueError(f"subword_window must leave room for special tokens and a word, got {subword_window}")
    return subword_window


def _by_frequency(counts: Counter[str]) -> list[tuple[str, int]]:
    """Most frequent first, ties in alphabetical order, so vocabularies do not depend on corpus order."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _as_batch(text: object, is_split_into_words: bool) -> list:
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


__all__ = ["TWEET_WORD", "URL_WORD", "AcnEmbeddingCoverage", "AcnTokenizer"]
