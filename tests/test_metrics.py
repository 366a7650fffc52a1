"""BLEU/ROUGE on tiny hand-checked examples, the sample table and the comparison plot."""

import math

import pytest

from lab_utils.evaluation.metrics import CharTokenizer, bleu, is_chinese, rouge, sample_table, text_metrics
from lab_utils.core.plots import plot_metric_comparison


def test_identical_text_scores_100():
    chinese = ["高血压患者要少吃盐，多运动，按时服药。", "感冒了多喝水"]
    for texts in (chinese, ["Drink more water and rest well today."]):
        scores = text_metrics(texts, texts)
        for name in ("bleu4", "rouge1", "rouge2", "rougeL"):
            assert scores[name] == pytest.approx(100.0)


def test_disjoint_text_scores_0():
    scores = text_metrics(["多喝热水"], ["按时服药"])
    assert scores["language"] == "zh"
    assert all(scores[name] == 0.0 for name in ("bleu4", "rouge1", "rouge2", "rougeL"))
    english = text_metrics(["cats sleep"], ["dogs bark"])
    assert english["language"] == "other" and english["rouge1"] == english["bleu4"] == 0.0


def test_partial_rouge_on_characters_hand_computed():
    # prediction 我头痛 vs reference 我头很痛:
    # unigrams: 3 of 3 predicted match, 3 of 4 reference -> P=1, R=3/4, F=6/7
    # bigrams: 我头 matches; P=1/2, R=1/3 -> F=0.4; LCS 我头痛 = 3 -> same as unigrams
    scores = rouge(["我头痛"], ["我头很痛"])
    assert scores["rouge1"] == pytest.approx(100 * 6 / 7)
    assert scores["rouge2"] == pytest.approx(40.0)
    assert scores["rougeL"] == pytest.approx(100 * 6 / 7)


def test_partial_bleu_hand_computed():
    # every n-gram of the 6-character prediction is in the 7-character reference: all
    # precisions are 1 and only the brevity penalty exp(1 - 7/6) remains
    assert bleu(["我今天头很痛"], ["我今天头很痛啊"]) == pytest.approx(100 * math.exp(1 - 7 / 6))
    assert bleu(["a b c d e"], ["a b c d e f"]) == pytest.approx(100 * math.exp(1 - 6 / 5))


def test_chinese_detection_and_tokeniser():
    assert is_chinese(["血压 140/90，需要复查"]) and not is_chinese(["blood pressure 140/90"])
    assert CharTokenizer().tokenize("CT显示3mm结节。") == ["ct", "显", "示", "3mm", "结", "节"]


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        text_metrics(["a", "b"], ["a"])


def test_sample_table_and_plot(tmp_path):
    table = sample_table(["头疼怎么办"], ["多休息" * 10], ["不知道"], ["多休息"], max_chars=5)
    assert list(table.columns) == ["question", "reference", "base", "tuned"]
    assert table.loc[0, "reference"] == "多休息多休…"
    with pytest.raises(ValueError, match="different lengths"):
        sample_table(["q"], ["r"], ["b"], [])
    base, tuned = text_metrics(["我头痛"], ["我头很痛"]), text_metrics(["我头很痛"], ["我头很痛"])
    figure = plot_metric_comparison(base, tuned, path=tmp_path / "metrics.png")
    assert (tmp_path / "metrics.png").stat().st_size > 0
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["bleu4", "rouge1", "rouge2", "rougeL"]
