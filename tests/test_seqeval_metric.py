"""The local seqeval metric against hand-computed scores, including an orphan I- tag."""

import evaluate
import pytest

from acn_mner import evaluation

METRIC_PATH = str(evaluation.METRIC_PATH)


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(METRIC_PATH)


def test_hand_computed_scores(metric):
    references = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-OTHER", "I-OTHER"]]
    predictions = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "B-OTHER", "O"]]
    # gold: PER(0-1), LOC(3), ORG(0), OTHER(2-3); predicted: PER(0-1), ORG(3), ORG(0), OTHER(2)
    # correct: PER, ORG(0) -> precision 2/4, recall 2/4
    results = metric.compute(predictions=predictions, references=references)
    assert results["overall_precision"] == pytest.approx(0.5)
    assert results["overall_recall"] == pytest.approx(0.5)
    assert results["overall_f1"] == pytest.approx(0.5)
    assert results["num_gold_entities"] == 4
    assert results["overall_accuracy"] == pytest.approx(6 / 8)
    assert results["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "number": 1}
    assert results["ORG"]["precision"] == pytest.approx(0.5) and results["ORG"]["recall"] == 1.0
    assert results["ORG"]["f1"] == pytest.approx(2 / 3)
    assert results["LOC"]["f1"] == 0.0 and results["OTHER"]["f1"] == 0.0


def test_orphan_inside_tag_counts_as_an_entity_only_when_lenient(metric):
    references = [["O", "I-PER", "I-PER", "O", "B-LOC"]]
    predictions = [["O", "B-PER", "I-PER", "O", "B-LOC"]]
    results = metric.compute(predictions=predictions, references=references)
    # lenient: the gold orphan I-PER I-PER is the entity PER(1-2), matched exactly
    assert results["num_gold_entities"] == 2 and results["overall_f1"] == 1.0
    # strict IOB2: the orphan is no entity, so gold holds only LOC; predicted PER is a false positive
    assert results["strict_num_gold_entities"] == 1
    assert results["strict_overall_precision"] == pytest.approx(0.5)
    assert results["strict_overall_recall"] == 1.0
    assert results["strict_overall_f1"] == pytest.approx(2 / 3)


def test_length_mismatch_is_refused(metric):
    with pytest.raises(ValueError, match="sentence 0: 2 predicted tags for 3 gold tags"):
        metric.compute(predictions=[["O", "O"]], references=[["O", "O", "O"]])
