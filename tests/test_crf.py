"""The CRF against enumeration of every tag path and against the pytorch-crf package."""

import itertools

import pytest
import torch
import torchcrf

from modeling_acn import AcnCrf, AcnForTokenClassification
from modeling_acn.modeling_acn import bio_transition_table

NUM_TAGS = 4


def path_score(crf, emissions, path):
    score = crf.start_transitions[path[0]] + emissions[0, path[0]]
    for step in range(1, len(path)):
        score = score + crf.transitions[path[step - 1], path[step]] + emissions[step, path[step]]
    return score + crf.end_transitions[path[-1]]


def all_paths(length, num_tags=NUM_TAGS):
    return [list(path) for path in itertools.product(range(num_tags), repeat=length)]


@pytest.fixture
def crf():
    torch.manual_seed(0)
    module = AcnCrf(NUM_TAGS)
    for parameter in module.parameters():
        torch.nn.init.normal_(parameter)
    return module


@pytest.fixture
def batch():
    torch.manual_seed(1)
    lengths = torch.tensor([4, 1, 3, 2])
    emissions = torch.randn(len(lengths), 4, NUM_TAGS)  # (batch, seq_len, tags)
    mask = torch.arange(4)[None, :] < lengths[:, None]  # (batch, seq_len)
    tags = torch.randint(NUM_TAGS, (len(lengths), 4))
    return emissions, mask, tags, lengths


def test_log_partition_equals_enumeration(crf, batch):
    emissions, mask, _, lengths = batch
    log_z = crf.log_partition(emissions, mask)
    for index, length in enumerate(lengths.tolist()):
        scores = torch.stack([path_score(crf, emissions[index], path) for path in all_paths(length)])
        torch.testing.assert_close(log_z[index], scores.logsumexp(0))


def test_viterbi_equals_enumeration(crf, batch):
    emissions, mask, _, lengths = batch
    decoded = crf.decode(emissions, mask)
    for index, length in enumerate(lengths.tolist()):
        best = max(all_paths(length), key=lambda path: path_score(crf, emissions[index], path).item())
        assert decoded[index, :length].tolist() == best
        assert (decoded[index, length:] == -100).all()


def test_constrained_viterbi_equals_enumeration_of_allowed_paths(crf, batch):
    emissions, mask, _, lengths = batch
    allowed = torch.rand(NUM_TAGS, NUM_TAGS, generator=torch.Generator().manual_seed(3)) > 0.4
    allowed[:, 0] = True  # keeps at least one valid path for every length
    allowed_start = torch.tensor([True, False, True, False])
    decoded = crf.decode(emissions, mask, allowed, allowed_start)
    for index, length in enumerate(lengths.tolist()):
        valid = [
            path
            for path in all_paths(length)
            if allowed_start[path[0]] and all(allowed[a, b] for a, b in itertools.pairwise(path))
        ]
        best = max(valid, key=lambda path: path_score(crf, emissions[index], path).item())
        assert decoded[index, :length].tolist() == best


def test_constrained_viterbi_needs_both_tables(crf, batch):
    emissions, mask, _, _ = batch
    allowed = torch.ones(NUM_TAGS, NUM_TAGS, dtype=torch.bool)
    allowed_start = torch.ones(NUM_TAGS, dtype=torch.bool)
    with pytest.raises(ValueError, match="allowed and allowed_start constrain decoding together: give both or neither"):
        crf.decode(emissions, mask, allowed)
    with pytest.raises(ValueError, match="allowed and allowed_start constrain decoding together"):
        crf.decode(emissions, mask, allowed_start=allowed_start)


def test_log_likelihood_matches_pytorch_crf(crf, batch):
    emissions, mask, tags, _ = batch
    reference = torchcrf.CRF(NUM_TAGS, batch_first=True)
    reference.start_transitions.data.copy_(crf.start_transitions.data)
    reference.end_transitions.data.copy_(crf.end_transitions.data)
    reference.transitions.data.copy_(crf.transitions.data)  # both index [from, to]
    ours = crf.log_likelihood(emissions, tags, mask)
    theirs = reference(emissions, tags, mask.to(torch.uint8), reduction="none")
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert reference.decode(emissions, mask.to(torch.uint8)) == [
        row[row >= 0].tolist() for row in crf.decode(emissions, mask)
    ]


def test_likelihoods_of_all_paths_sum_to_one(crf):
    emissions = torch.randn(1, 3, NUM_TAGS)
    mask = torch.ones(1, 3, dtype=torch.bool)
    total = sum(crf.log_likelihood(emissions, torch.tensor([path]), mask).exp() for path in all_paths(3))
    torch.testing.assert_close(total, torch.ones(1))


# Tags with -100 (transformers' "ignored by the loss") on real words: at the first word, at the last, in runs, in the
# middle, on every word; one row fully tagged. Padding is -100 too.
IGNORED_TAGS = [
    ([-100, 2, -100, -100], 4),
    ([-100, -100, -100, -100], 1),
    ([1, -100, 3, -100], 3),
    ([-100, -100, -100, -100], 2),
    ([0, 1, 2, 3], 4),
    ([3, -100, -100, 0], 4),
]


def test_log_likelihood_marginalises_ignored_words_as_enumeration_does(crf):
    """log p(known tags) = log-sum over the paths that agree with the known tags - log-sum over all paths."""
    torch.manual_seed(2)
    tags = torch.tensor([row for row, _ in IGNORED_TAGS])  # (batch, seq_len)
    lengths = torch.tensor([length for _, length in IGNORED_TAGS])  # (batch,)
    mask = torch.arange(4)[None, :] < lengths[:, None]  # (batch, seq_len)
    emissions = torch.randn(len(IGNORED_TAGS), 4, NUM_TAGS, requires_grad=True)  # (batch, seq_len, tags)
    ours = crf.log_likelihood(emissions, tags, mask)
    for index, length in enumerate(lengths.tolist()):
        known = tags[index, :length].tolist()
        scores = [path_score(crf, emissions[index], path) for path in all_paths(length)]
        agreeing = [
            score
            for path, score in zip(all_paths(length), scores, strict=True)
            if all(tag in (-100, step_tag) for tag, step_tag in zip(known, path, strict=True))
        ]
        expected = torch.stack(agreeing).logsumexp(0) - torch.stack(scores).logsumexp(0)
        torch.testing.assert_close(ours[index], expected)
    assert ours[1].abs() < 1e-5 and ours[3].abs() < 1e-5  # nothing known: likelihood 1
    (-ours.sum()).backward()
    assert torch.isfinite(emissions.grad).all()
    assert all(torch.isfinite(parameter.grad).all() for parameter in crf.parameters())


def test_an_ignored_word_sums_the_likelihoods_of_its_tags(crf):
    torch.manual_seed(3)
    emissions, mask = torch.randn(1, 4, NUM_TAGS), torch.ones(1, 4, dtype=torch.bool)
    for position in range(4):
        tags = torch.tensor([[2, 0, 3, 1]])
        tags[0, position] = -100
        each = [crf.log_likelihood(emissions, tags.masked_fill(tags == -100, tag), mask) for tag in range(NUM_TAGS)]
        torch.testing.assert_close(crf.log_likelihood(emissions, tags, mask), torch.stack(each).logsumexp(0))


def test_bio_table_forbids_inside_without_begin():
    allowed, allowed_start = bio_transition_table({0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"})
    assert allowed_start.tolist() == [True, True, False, True, False]
    assert allowed[1, 2] and allowed[2, 2] and allowed[0, 1] and allowed[2, 3]
    assert not allowed[0, 2] and not allowed[3, 2] and not allowed[4, 2] and not allowed[1, 4]


def test_model_decode_respects_bio_constraint(tiny_config, text_batch):
    torch.manual_seed(0)
    model = AcnForTokenClassification(tiny_config.__class__(**{**tiny_config.to_dict(), "use_image": False})).eval()
    logits = torch.zeros(1, 3, model.config.num_labels)
    logits[0, :, model.config.label2id["I-PER"]] = 5.0  # the unconstrained best is an orphan I-PER run
    constrained = model.decode(logits, constrain_bio=True)[0]
    labels = [model.config.id2label[tag] for tag in constrained]
    assert labels[0] != "I-PER" and labels == ["B-PER", "I-PER", "I-PER"]
    assert model.decode(logits)[0] == [model.config.label2id["I-PER"]] * 3


def test_bio_table_survives_save_and_load(tiny_config, tmp_path):
    model = AcnForTokenClassification(tiny_config)
    model.save_pretrained(tmp_path)
    loaded = AcnForTokenClassification.from_pretrained(tmp_path)
    expected_allowed, expected_start = bio_transition_table(tiny_config.id2label)
    assert torch.equal(loaded.bio_allowed, expected_allowed) and torch.equal(loaded.bio_allowed_start, expected_start)
