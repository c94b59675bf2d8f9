"""The peers that benchmarks/quality.py sets beside ACN on the same corpus, data and dev selection.

- `train_feature_crf`: a classic linear-chain CRF over hand-made lexical, shape and context-window features
  (sklearn-crfsuite).
- `train_token_classification`: the plain fine-tune of a pretrained encoder, `AutoModelForTokenClassification`
  (softmax per subword). Same data, epoch budget and dev selection as `examples/train_acn.py --text_encoder`: each
  word is labelled on its first subword (the others get -100, transformers' run_ner convention), AdamW with linear
  warm-up and decay, the epoch with the best dev entity F1 is kept and scored on test. Every word is scored: a tweet
  longer than the encoder's limit is refused, not cut (Twitter-2015's longest is 41 words, far below MiniLM's 512
  subwords).
"""

import copy
import math
import re
import time
from collections.abc import Iterable, Iterator
from typing import Any

import evaluate
import torch
from datasets import Dataset, DatasetDict
from transformers import (
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedTokenizerBase,
    get_linear_schedule_with_warmup,
)

from .evaluation import gold_tags, score

# --- feature CRF ---------------------------------------------------------------------------------------------------

CONTEXT = (-2, -1, 1, 2)  # neighbouring words whose features join the current word's
C1, C2 = 0.1, 0.1  # L1 and L2 penalties, crfsuite's usual starting point
MAX_ITERATIONS = 150


def word_shape(word: str) -> str:
    """Xx, x, X, d and punctuation classes, runs collapsed: `iPhone7` -> `xXxd`."""
    shape = re.sub("[A-Z]", "X", re.sub("[a-z]", "x", re.sub("[0-9]", "d", word)))
    return re.sub(r"(.)\1+", r"\1", shape)


def word_features(word: str, prefix: str) -> dict[str, Any]:
    lower = word.lower()
    return {
        f"{prefix}lower": lower,
        f"{prefix}shape": word_shape(word),
        f"{prefix}title": word.istitle(),
        f"{prefix}upper": word.isupper(),
        f"{prefix}mention": word.startswith("@"),
        f"{prefix}hashtag": word.startswith("#"),
    }


def token_features(words: list[str], index: int) -> dict[str, Any]:
    word = words[index]
    features = {"bias": 1.0, **word_features(word, ""), "suffix3": word[-3:].lower(), "prefix3": word[:3].lower()}
    features.update({"first": index == 0, "last": index == len(words) - 1})
    for offset in CONTEXT:
        position = index + offset
        if 0 <= position < len(words):
            features.update(word_features(words[position], f"{offset:+d}:"))
    return features


def sentence_features(words: list[str]) -> list[dict[str, Any]]:
    return [token_features(words, index) for index in range(len(words))]


def train_feature_crf(corpus: DatasetDict) -> list[list[str]]:
    """Train on the training split and tag the test split; returns predicted tag sequences."""
    import sklearn_crfsuite  # a development dependency (setup.cfg's dev extra), like this benchmark

    names = corpus["train"].features["ner_tags"].feature.names
    crf = sklearn_crfsuite.CRF(
        algorithm="lbfgs", c1=C1, c2=C2, max_iterations=MAX_ITERATIONS, all_possible_transitions=True
    )
    crf.fit(
        [sentence_features(words) for words in corpus["train"]["tokens"]],
        [[names[tag] for tag in tags] for tags in corpus["train"]["ner_tags"]],
    )
    return crf.predict([sentence_features(words) for words in corpus["test"]["tokens"]])


# --- plain token classification --------------------------------------------------------------------------------------

IGNORE = -100
# a tweet encoded: its subword ids, the label of each subword (-100 but on first subwords), its words' first subwords
EncodedTweet = tuple[list[int], list[int], list[int]]


def encode_split(tokenizer: PreTrainedTokenizerBase, split: Dataset, max_length: int) -> list[EncodedTweet]:
    """Subword ids per tweet, the label of each word on its first subword, and the first-subword positions. A word
    the tokenizer would drop (a lone zero-width joiner) is read as its unknown token, as AcnTokenizer does."""
    rows = []
    for index, (words, tags) in enumerate(zip(split["tokens"], split["ner_tags"], strict=True)):
        words = [word if tokenizer.tokenize(word) else tokenizer.unk_token for word in words]
        encoding = tokenizer(words, is_split_into_words=True, add_special_tokens=True)
        if len(encoding["input_ids"]) > max_length:
            raise ValueError(
                f"tweet {index} has {len(encoding['input_ids'])} subwords, over the encoder's {max_length}"
            )
        word_ids = encoding.word_ids()
        firsts = [
            position
            for position, word in enumerate(word_ids)
            if word is not None and word != (word_ids[position - 1] if position else None)
        ]
        if len(firsts) != len(words):
            raise ValueError(f"tweet {index}: {len(words) - len(firsts)} words have no subword")
        labels = [IGNORE] * len(word_ids)
        for position, tag in zip(firsts, tags, strict=True):
            labels[position] = tag
        rows.append((encoding["input_ids"], labels, firsts))
    return rows


def batches(
    rows: list[EncodedTweet], batch_size: int, pad_id: int, order: Iterable[int] | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[list[int]]]]:
    order = list(range(len(rows)) if order is None else order)
    for start in range(0, len(order), batch_size):
        chunk = [rows[index] for index in order[start : start + batch_size]]
        length = max(len(ids) for ids, _, _ in chunk)
        ids = torch.tensor([ids + [pad_id] * (length - len(ids)) for ids, _, _ in chunk])  # (batch, length)
        mask = torch.tensor([[1] * len(ids_) + [0] * (length - len(ids_)) for ids_, _, _ in chunk])  # (batch, length)
        labels = torch.tensor([labels + [IGNORE] * (length - len(labels)) for _, labels, _ in chunk])  # (batch, length)
        yield ids, mask, labels, [firsts for _, _, firsts in chunk]


def predict(
    model: torch.nn.Module, rows: list[EncodedTweet], names: list[str], batch_size: int, pad_id: int
) -> list[list[str]]:
    model.eval()
    predictions = []
    with torch.no_grad():
        for ids, mask, _, firsts in batches(rows, batch_size, pad_id):
            best = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)  # (batch, length)
            predictions += [
                [names[tag] for tag in row[positions].tolist()] for row, positions in zip(best, firsts, strict=True)
            ]
    return predictions


def train_token_classification(
    corpus: DatasetDict,
    model_path: str,
    metric: evaluate.EvaluationModule,
    seed: int = 1,
    num_epochs: int = 10,
    patience: int = 3,
    batch_size: int = 16,
    learning_rate: float = 5e-5,
    warmup_ratio: float = 0.1,
) -> dict[str, Any]:
    """Fine-tune, select on dev, score test; returns the same keys as train_acn.py's all_results.json."""
    if num_epochs < 1:
        raise ValueError(f"num_epochs must be at least 1, got {num_epochs}")
    torch.manual_seed(seed)
    names = corpus["train"].features["ner_tags"].feature.names
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=False)
    model = AutoModelForTokenClassification.from_pretrained(
        model_path,
        trust_remote_code=False,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
    )
    pad_id = tokenizer.pad_token_id or 0
    rows = {
        split: encode_split(tokenizer, corpus[split], tokenizer.model_max_length)
        for split in ("train", "validation", "test")
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    steps = math.ceil(len(rows["train"]) / batch_size) * num_epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(warmup_ratio * steps), steps)
    generator = torch.Generator().manual_seed(seed)
    best_f1, best_state, best_epoch, waited, started = -1.0, None, 0, 0, time.perf_counter()
    for epoch in range(num_epochs):
        model.train()
        for ids, mask, labels, _ in batches(
            rows["train"], batch_size, pad_id, torch.randperm(len(rows["train"]), generator=generator).tolist()
        ):
            model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        dev = score(metric, predict(model, rows["validation"], names, 64, pad_id), gold_tags(corpus["validation"]))
        print(f"peer epoch {epoch + 1}: dev F1 {100 * dev['overall_f1']:.2f}", flush=True)
        if dev["overall_f1"] > best_f1:
            best_f1, best_state, best_epoch, waited = dev["overall_f1"], copy.deepcopy(model.state_dict()), epoch + 1, 0
        else:
            waited += 1
            if waited >= patience:
                break
    elapsed = time.perf_counter() - started
    assert best_state is not None  # the first epoch's dev F1 beats -1
    model.load_state_dict(best_state)
    results = {"best_epoch": best_epoch, "epochs_trained": epoch + 1, "train_seconds": round(elapsed, 1)}
    for split in ("validation", "test"):
        scores = score(metric, predict(model, rows[split], names, 64, pad_id), gold_tags(corpus[split]))
        results.update({f"{split}_{key}": value for key, value in scores.items()})
    return results
