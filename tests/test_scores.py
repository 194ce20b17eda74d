"""Caption scores: the COCO tools with Java (PTB tokenizer and METEOR), a simple tokenizer without."""

import pytest

from captioner.train.evaluation import java_found, score_captions
from helpers import scores_without_java

PREDICTIONS = {"1": "A red circle, on a white background.", "2": "a dog on a mat", "3": "a blue square"}
REFERENCES = {"1": ["a red circle on a white background"], "2": ["a cat on a mat", "a cat sitting on a mat"],
              "3": ["a blue square on a black background"]}


def simple_scores(monkeypatch, predictions, references):
    scores_without_java(monkeypatch)
    return score_captions(predictions, references)


def test_without_java_the_simple_tokenizer_scores_and_meteor_is_left_out(monkeypatch):
    metrics, tokenizer = simple_scores(monkeypatch, PREDICTIONS, REFERENCES)
    assert tokenizer == "simple (no Java: METEOR left out)" and metrics["METEOR"] is None
    assert 0 < metrics["BLEU-1"] < 1 and 0 < metrics["ROUGE-L"] < 1 and metrics["CIDEr"] > 0
    # Case and punctuation are tokenized away: the right words in the right order score full marks.
    perfect, _ = score_captions({"1": PREDICTIONS["1"]}, {"1": REFERENCES["1"]})
    assert perfect["BLEU-1"] == pytest.approx(1.0) and perfect["BLEU-4"] == pytest.approx(1.0)
    assert perfect["ROUGE-L"] == pytest.approx(1.0)


@pytest.mark.skipif(not java_found(), reason="no Java here: the PTB tokenizer and METEOR need it")
def test_with_java_meteor_is_scored_and_plain_english_tokenizes_as_without(monkeypatch):
    metrics, tokenizer = score_captions(PREDICTIONS, REFERENCES)
    assert tokenizer == "PTB (Java)" and 0 < metrics["METEOR"] < 1
    simple, _ = simple_scores(monkeypatch, PREDICTIONS, REFERENCES)
    for name in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr"):
        assert metrics[name] == pytest.approx(simple[name]), name
