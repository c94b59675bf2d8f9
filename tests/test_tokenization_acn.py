"""AcnTokenizer: the vocabulary, tweet normalisation, word splitting with exact offsets, character ids, padding and
truncation, save and reload, and pretrained word embeddings from a GloVe file."""

import json

import pytest
import torch

from modeling_acn.tokenization_acn import AcnTokenizer

TRAIN = [
    ["RT", "@JayKenMinaj", ":", "Obama", "visits", "Paris", "http://t.co/Z3neVBQ7vF"],
    ["obama", "meets", "Merkel", "in", "Paris", "."],
    ["Paris", "in", "2015", "!"],
]
DEV_ONLY_WORD = "Zimmerman"


@pytest.fixture
def tokenizer():
    return AcnTokenizer.from_corpus(TRAIN)


def test_special_tokens_have_fixed_ids(tokenizer):
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id) == (0, 1)
    assert tokenizer.get_vocab()["[PAD]"] == 0 and tokenizer.get_vocab()["[UNK]"] == 1
    assert tokenizer.get_char_vocab()["[PAD]"] == 0 and tokenizer.get_char_vocab()["[UNK]"] == 1


def test_vocabulary_holds_the_training_words_only_most_frequent_first(tokenizer):
    vocab = tokenizer.get_vocab()
    assert list(vocab)[2:4] == ["paris", "in"]  # 3 and 2 occurrences; "obama" ties with "in" but sorts after
    assert {"obama", "<user>", "<url>", "2015", "merkel"} <= set(vocab)
    assert DEV_ONLY_WORD.lower() not in vocab
    assert len(tokenizer) == tokenizer.vocab_size == len(vocab)


def test_unknown_word_gets_unk_id(tokenizer):
    ids = tokenizer([DEV_ONLY_WORD, "Paris"], is_split_into_words=True)["input_ids"]
    assert ids == [[1, tokenizer.get_vocab()["paris"]]]


def test_min_freq_and_extra_words():
    tokenizer = AcnTokenizer.from_corpus(TRAIN, min_freq=2, extra_words=["Zimmerman", "PARIS"])
    assert list(tokenizer.get_vocab())[2:] == ["paris", "in", "obama", "zimmerman"]
    assert "Z" not in tokenizer.get_char_vocab()  # extra words do not extend the character vocabulary
    cased = AcnTokenizer.from_corpus(TRAIN, do_lower_case=False, extra_words=["[UNK]", "Paris"])
    assert len(cased) == len(AcnTokenizer.from_corpus(TRAIN, do_lower_case=False))


def test_from_corpus_rejects_bad_arguments():
    with pytest.raises(ValueError, match="min_freq must be at least 1, got 0"):
        AcnTokenizer.from_corpus(TRAIN, min_freq=0)
    with pytest.raises(ValueError, match="sentences must be lists of words, got the str 'Obama visits' at index 1"):
        AcnTokenizer.from_corpus([["a"], "Obama visits"])
    with pytest.raises(ValueError, match="max_word_length must be at least 1, got 0"):
        AcnTokenizer.from_corpus(TRAIN, max_word_length=0)
    with pytest.raises(ValueError, match=r"unknown options \['lowercase'\]"):
        AcnTokenizer.from_corpus(TRAIN, lowercase=False)


def test_normalisation_of_urls_users_hashtags_case_and_digits():
    tokenizer = AcnTokenizer.from_corpus(TRAIN, replace_digits=True)
    assert tokenizer.normalize("http://t.co/abc") == "<url>"
    assert tokenizer.normalize("www.example.com") == "<url>"
    assert tokenizer.normalize("http://t.co…") == "<url>"  # truncated retweet link
    assert tokenizer.normalize("@SomeOne_1") == "<user>"
    assert tokenizer.normalize("Obama") == "obama"
    assert tokenizer.normalize("#Paris2015") == "paris0000"  # a hashtag shares its word's vector
    assert tokenizer.normalize("#") == "#"
    assert tokenizer.normalize("##") == "##"  # not a hashtag
    assert "0000" in tokenizer.get_vocab()
    assert tokenizer.char_form("Obama") == "Obama"  # characters keep their case
    assert tokenizer.char_form("#Paris") == "#Paris"  # and the hashtag mark


def test_normalisation_can_be_switched_off():
    tokenizer = AcnTokenizer.from_corpus(
        TRAIN, do_lower_case=False, replace_urls=False, replace_users=False, hashtags_as_words=False
    )
    assert {"Obama", "obama", "@JayKenMinaj", "http://t.co/Z3neVBQ7vF"} <= set(tokenizer.get_vocab())
    assert tokenizer.normalize("#Paris") == "#Paris"


def test_characters_keep_case(tokenizer):
    chars = tokenizer.get_char_vocab()
    assert {"O", "o", "P", "M"} <= set(chars)
    assert tokenizer.char_ids_of("Obama")[0] == chars["O"] != tokenizer.char_ids_of("obama")[0] == chars["o"]
    assert tokenizer.char_ids_of("@JayKenMinaj") == [chars[c] for c in "<user>"]
    assert tokenizer.char_ids_of("Ωa") == [1, chars["a"]]  # unseen character -> char [UNK]


@pytest.mark.parametrize(
    "text, words",
    [
        (
            "RT  @JayKenMinaj: Obama's   trip to Paris 👨‍👩‍👧!!! http://t.co/Z3neVBQ7vF. #Paris2015",
            [
                "RT",
                "@JayKenMinaj",
                ":",
                "Obama",
                "'",
                "s",
                "trip",
                "to",
                "Paris",
                "👨‍👩‍👧",
                "!!!",
                "http://t.co/Z3neVBQ7vF",
                ".",
                "#Paris2015",
            ],
        ),
        ("🇫🇷❤️ Paris👍🏽 (www.x.org)", ["🇫🇷", "❤️", "Paris", "👍🏽", "(", "www.x.org", ")"]),
        ("  leading and trailing  \t\n", ["leading", "and", "trailing"]),
        ("Great news … http… ht…", ["Great", "news", "…", "http…", "ht…"]),  # truncated retweet links
        ("Bank Dr &amp; Opal Rd ... 2014-15", ["Bank", "Dr", "&amp", ";", "Opal", "Rd", "...", "2014-15"]),
    ],
)
def test_split_text_keeps_tweet_tokens_and_exact_offsets(text, words):
    split_words, offsets = AcnTokenizer.split_text(text)
    assert split_words == words
    assert all(text[start:end] == word for word, (start, end) in zip(split_words, offsets, strict=True))


def test_offset_mapping_points_into_each_tweet(tokenizer):
    texts = ["@user  😀😀 Obama in Paris http://t.co/x", "Merkel"]
    encoding = tokenizer(texts, return_offsets_mapping=True, return_words=True)
    for text, words, offsets in zip(texts, encoding["words"], encoding["offset_mapping"], strict=True):
        assert [text[start:end] for start, end in offsets[: len(words)]] == words
        assert offsets[len(words) :] == [(0, 0)] * (len(offsets) - len(words))
    assert encoding["words"][0] == ["@user", "😀", "😀", "Obama", "in", "Paris", "http://t.co/x"]


def test_offsets_of_split_words_point_into_the_joined_words(tokenizer):
    words = ["Obama", "in", "Paris"]
    offsets = tokenizer(words, is_split_into_words=True, return_offsets_mapping=True)["offset_mapping"][0]
    assert [" ".join(words)[start:end] for start, end in offsets] == words


def test_char_ids_are_truncated_to_max_word_length(tokenizer):
    long_word = "Parisss" * 6  # 42 characters
    char_ids = tokenizer([long_word, "in"], is_split_into_words=True, return_tensors="pt")["char_ids"]
    assert char_ids.shape == (1, 2, 30)
    assert char_ids.dtype == torch.long
    assert char_ids[0, 0].tolist() == tokenizer.char_ids_of(long_word[:30])
    assert char_ids[0, 1, 2:].eq(0).all()


def test_char_axis_is_at_least_min_char_width(tokenizer):
    char_ids = tokenizer(["in", "."], is_split_into_words=True, return_tensors="pt")["char_ids"]
    assert char_ids.shape == (1, 2, 4)
    wide = AcnTokenizer.from_corpus(TRAIN, min_char_width=7)
    assert wide(["in"], is_split_into_words=True, return_tensors="pt")["char_ids"].shape == (1, 1, 7)


def test_batch_is_padded_to_the_longest_example(tokenizer):
    batch = [["Obama", "in", "Paris"], ["Merkel"]]
    encoding = tokenizer(batch, is_split_into_words=True, return_tensors="pt")
    vocab = tokenizer.get_vocab()
    assert encoding["input_ids"].tolist() == [[vocab["obama"], vocab["in"], vocab["paris"]], [vocab["merkel"], 0, 0]]
    assert encoding["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert encoding["char_ids"].shape == (2, 3, 6)
    assert encoding["char_ids"][1, 1:].eq(0).all()


def test_padding_to_max_length_and_truncation(tokenizer):
    words = ["Obama", "in", "Paris"]
    padded = tokenizer(words, is_split_into_words=True, padding="max_length", max_length=5, return_tensors="pt")
    assert padded["input_ids"].shape == (1, 5) and padded["attention_mask"].sum() == 3
    cut = tokenizer(words, is_split_into_words=True, truncation=True, max_length=2, return_words=True)
    assert cut["words"] == [["Obama", "in"]] and len(cut["input_ids"][0]) == 2


def test_encoding_errors_name_the_problem(tokenizer):
    with pytest.raises(ValueError, match="more than max_length=2; set truncation"):
        tokenizer(["a", "b", "c"], is_split_into_words=True, padding="max_length", max_length=2)
    with pytest.raises(ValueError, match="padding must be True, 'longest' or 'max_length', got 'sideways'"):
        tokenizer("Paris", padding="sideways")
    with pytest.raises(ValueError, match="max_length must be at least 1, got 0"):
        tokenizer("Paris", truncation=True, max_length=0)
    with pytest.raises(ValueError, match="truncation=True needs max_length"):
        tokenizer("Paris", truncation=True)
    with pytest.raises(ValueError, match="example 1 has no words: '   '"):
        tokenizer(["Paris", "   "])
    with pytest.raises(ValueError, match="is_split_into_words=True needs a non-empty list of words, got 'Paris'"):
        tokenizer("Paris", is_split_into_words=True)
    with pytest.raises(ValueError, match="pass is_split_into_words=True for words"):
        tokenizer([["Paris"]])


def test_hugging_face_entry_points_agree(tokenizer):
    text = "Obama in Paris http://t.co/x"
    assert tokenizer.tokenize(text) == ["obama", "in", "paris", "<url>"]
    assert tokenizer.encode(text) == tokenizer(text)["input_ids"][0]
    assert tokenizer.decode(tokenizer.encode(text)) == "obama in paris <url>"


def test_save_and_reload_round_trip(tmp_path):
    tokenizer = AcnTokenizer.from_corpus(
        TRAIN, replace_digits=True, hashtags_as_words=False, max_word_length=5, min_char_width=3
    )
    tokenizer.save_pretrained(tmp_path)
    assert {"vocab.json", "char_vocab.json", "tokenizer_config.json", "tokenization_acn.py"} <= {
        p.name for p in tmp_path.iterdir()
    }
    reloaded = AcnTokenizer.from_pretrained(tmp_path)
    assert reloaded.get_vocab() == tokenizer.get_vocab()
    assert reloaded.get_char_vocab() == tokenizer.get_char_vocab()
    options = ("replace_digits", "hashtags_as_words", "max_word_length", "min_char_width")
    assert [getattr(reloaded, option) for option in options] == [True, False, 5, 3]
    texts = ["Obama in Paris 2016 👍 #Paris", "@JayKenMinaj Merkelization"]
    expected, actual = tokenizer(texts, return_tensors="pt"), reloaded(texts, return_tensors="pt")
    assert all(torch.equal(expected[key], actual[key]) for key in ("input_ids", "char_ids", "attention_mask"))


def test_vocabulary_file_with_wrong_special_ids_is_rejected(tmp_path):
    (tmp_path / "vocab.json").write_text('{"[UNK]": 0, "[PAD]": 1}')
    (tmp_path / "chars.json").write_text('{"[PAD]": 0, "[UNK]": 1}')
    with pytest.raises(ValueError, match=r"vocab\.json: '\[PAD\]' must have id 0 and '\[UNK\]' id 1"):
        AcnTokenizer(vocab_file=str(tmp_path / "vocab.json"), char_vocab_file=str(tmp_path / "chars.json"))


# --------------------------------------------------------------------------------------- pre-trained vectors

GLOVE = """paris 0.1 0.2 0.3
Obama 1.0 1.0 1.0
obama 0.5 0.5 0.5
merkel 0.7 0.8 0.9
<url> 0.0 0.1 0.0
unrelated 9 9 9
"""


@pytest.fixture
def glove_file(tmp_path):
    path = tmp_path / "glove.txt"
    path.write_text(GLOVE, encoding="utf-8")
    return path


def test_embedding_matrix_from_glove_file(tokenizer, glove_file):
    matrix, coverage = tokenizer.load_embeddings(glove_file, seed=3)
    vocab = tokenizer.get_vocab()
    assert matrix.shape == (len(tokenizer), 3) and matrix.dtype == torch.float32
    assert torch.equal(matrix[0], torch.zeros(3))  # [PAD]
    assert torch.allclose(matrix[vocab["paris"]], torch.tensor([0.1, 0.2, 0.3]))
    assert torch.allclose(matrix[vocab["obama"]], torch.tensor([0.5, 0.5, 0.5]))  # exact form wins
    assert torch.allclose(matrix[vocab["<url>"]], torch.tensor([0.0, 0.1, 0.0]))
    found = [vocab[w] for w in ("paris", "obama", "merkel", "<url>")]
    oov = [i for i in range(1, len(tokenizer)) if i not in found]  # [UNK] included
    assert matrix[oov].abs().max() <= 0.25 and matrix[oov].abs().sum() > 0
    assert (coverage.found, coverage.total, coverage.exact, coverage.lowercased, coverage.dim) == (
        4,
        len(tokenizer) - 2,
        4,
        0,
        3,
    )
    assert coverage.ratio == pytest.approx(4 / (len(tokenizer) - 2))
    assert torch.equal(matrix, tokenizer.load_embeddings(glove_file, seed=3)[0])
    assert not torch.equal(matrix, tokenizer.load_embeddings(glove_file, seed=4)[0])


def test_embedding_lookup_falls_back_to_lowercase(tmp_path):
    path = tmp_path / "w2v.txt"
    path.write_text("3 2\nParis 0.5 0.25 \nMERKEL 1 2 \nRT 3 4 \n", encoding="utf-8")  # word2vec header
    cased = AcnTokenizer.from_corpus(TRAIN, do_lower_case=False)
    matrix, coverage = cased.load_embeddings(path)
    vocab = cased.get_vocab()
    assert torch.allclose(matrix[vocab["Paris"]], torch.tensor([0.5, 0.25]))
    assert torch.allclose(matrix[vocab["Merkel"]], torch.tensor([1.0, 2.0]))
    assert (coverage.exact, coverage.lowercased, coverage.dim) == (2, 1, 2)


def test_embedding_file_words_extend_the_vocabulary(glove_file):
    tokenizer = AcnTokenizer.from_corpus(TRAIN, extra_words=AcnTokenizer.embedding_file_words(glove_file))
    assert "unrelated" in tokenizer.get_vocab()
    assert list(tokenizer.get_vocab()).count("obama") == 1


@pytest.mark.parametrize(
    "content, message",
    [
        ("paris 0.1 0.2\nobama 0.1\n", r"emb\.txt:2: expected 2 values, got 1"),
        ("2 3\nparis 0.1 0.2 0.3\nobama 0.1 0.2\n", r"emb\.txt:3: expected 3 values, got 2"),
        ("paris 0.1 0.2\nobama 0.1 oops\n", r"emb\.txt:2: values must be numbers, got '0\.1 oops'"),
        ("paris\n", r"emb\.txt:1: expected a word followed by its vector, got 'paris'"),
        ("", r"emb\.txt: no vectors found"),
    ],
)
def test_malformed_embedding_file_errors_name_file_and_line(tokenizer, tmp_path, content, message):
    path = tmp_path / "emb.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        tokenizer.load_embeddings(path)


def test_a_tokenizer_saved_before_the_hashtag_option_reloads_unchanged(tmp_path):
    tokenizer = AcnTokenizer.from_corpus([["#NBA", "NBA", "#Paris"]], hashtags_as_words=False)
    tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    del config["hashtags_as_words"]  # as written before the option existed
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    reloaded = AcnTokenizer.from_pretrained(tmp_path)
    assert reloaded.word_ids_of(["#NBA", "#Paris"]) == tokenizer.word_ids_of(["#NBA", "#Paris"])
    assert AcnTokenizer.from_corpus([["#NBA"]]).hashtags_as_words  # new vocabularies look hashtags up as words
