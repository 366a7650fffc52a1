"""Text-generation metrics shared by every experiment: BLEU-4 and ROUGE-1/2/L, 0..100.

Both come from maintained implementations, only the tokenisation is chosen here:

- BLEU-4: sacrebleu's corpus BLEU (one score over all pairs, with its brevity
  penalty). Tokeniser "zh" for Chinese (each CJK character a token, other text
  split like 13a), "13a" otherwise (the WMT standard); "intl" can be asked for
  (Unicode punctuation and symbols split off).
- ROUGE-1/2/L: the rouge_score package, F-measure averaged over pairs. Its
  default tokeniser keeps only [a-z0-9] and would drop Chinese entirely, so for
  Chinese we pass `CharTokenizer`: every CJK character is one token, runs of
  Latin letters and digits are one lowercase token each, punctuation is
  dropped. For other text it uses rouge_score's own word tokeniser with the
  Porter stemmer (the usual setting for English).

Language detection (`language="auto"`): Chinese when CJK ideographs are at
least CJK_SHARE of the non-space characters of all predictions and references
together.
"""

import re

import pandas as pd
import sacrebleu
from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
CJK_SHARE = 0.3  # Chinese text with some English terms and digits stays well above this
_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_CHAR = re.compile(f"[{_CJK}]")
_TOKEN = re.compile(f"[{_CJK}]|[a-z0-9]+")


class CharTokenizer:
    """rouge_score tokeniser for Chinese: one token per CJK character, one per Latin/digit run."""

    def tokenize(self, text: str) -> list:
        return _TOKEN.findall(text.lower())


def is_chinese(texts) -> bool:
    """True when CJK ideographs make up at least CJK_SHARE of the non-space characters."""
    joined = re.sub(r"\s+", "", "".join(texts))
    return bool(joined) and len(_CJK_CHAR.findall(joined)) / len(joined) >= CJK_SHARE


def _check_pairs(predictions, references) -> tuple[list, list]:
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    return [str(p) for p in predictions], [str(r) for r in references]


def _resolve_language(language: str, texts) -> str:
    if language not in ("auto", "zh", "other"):
        raise ValueError(f"language must be 'auto', 'zh' or 'other', not {language!r}")
    if language == "auto":
        return "zh" if is_chinese(texts) else "other"
    return language


def bleu(predictions, references, tokenize: str = "auto") -> float:
    """Corpus BLEU-4 (0..100) of predictions against one reference each.

    `tokenize`: "auto" ("zh" for Chinese, else "13a"), or any sacrebleu tokeniser name.
    """
    predictions, references = _check_pairs(predictions, references)
    if tokenize == "auto":
        tokenize = "zh" if is_chinese(predictions + references) else "13a"
    return sacrebleu.corpus_bleu(predictions, [references], tokenize=tokenize).score


def rouge(predictions, references, language: str = "auto") -> dict:
    """Mean ROUGE-1/2/L F-measure (0..100): characters for Chinese, stemmed words otherwise."""
    predictions, references = _check_pairs(predictions, references)
    if _resolve_language(language, predictions + references) == "zh":
        scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=CharTokenizer())
    else:
        scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(reference, prediction)  # rouge_score takes (target, prediction)
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    return {name: 100.0 * total / len(predictions) for name, total in totals.items()}


def text_metrics(predictions, references, language: str = "auto") -> dict:
    """BLEU-4 and ROUGE-1/2/L (0..100) in one dict, plus how the text was tokenised.

    Returns {"bleu4", "rouge1", "rouge2", "rougeL", "language", "n"}.
    """
    predictions, references = _check_pairs(predictions, references)
    language = _resolve_language(language, predictions + references)
    return {
        "bleu4": bleu(predictions, references, tokenize="zh" if language == "zh" else "13a"),
        **rouge(predictions, references, language=language),
        "language": language,
        "n": len(predictions),
    }


def sample_table(questions, references, base, tuned, max_chars: int | None = None) -> pd.DataFrame:
    """Side-by-side generations, one row per question: question, reference, base, tuned.

    `max_chars` shortens long cells (with "…") so the table stays readable in a notebook.
    """
    columns = {"question": list(questions), "reference": list(references), "base": list(base), "tuned": list(tuned)}
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"columns of different lengths: {lengths}")

    def shorten(text) -> str:
        text = str(text)
        return text if max_chars is None or len(text) <= max_chars else text[:max_chars] + "…"

    return pd.DataFrame({name: [shorten(v) for v in values] for name, values in columns.items()})
