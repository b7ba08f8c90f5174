"""Text similarity metrics of the `text_similarity` grader, each a score in [0, 1].

Every metric OpenAI lists is here, computed by the usual library, except `cosine`:

| metric | computed by | on |
|---|---|---|
| fuzzy_match | rapidfuzz's normalised Indel ratio | the raw text |
| bleu | nltk's sentence BLEU, up to 4-grams (never above the answer's length, so a short answer can score), Lin & Och's add-one smoothing for n >= 2 | word and punctuation tokens |
| gleu | nltk's sentence GLEU (Google-BLEU, 1- to 4-grams) | word and punctuation tokens |
| meteor | nltk's METEOR with exact and Porter-stem matches; no WordNet synonyms (that corpus is a download this service never makes) | word and punctuation tokens |
| rouge_1 .. rouge_5, rouge_l | Google's rouge-score (F-measure) | word tokens |
| cosine | refused (`UNSUPPORTED_METRICS`): it needs an embedding model | |

Tokens are lowercased and Unicode-aware (`\\w+`), so text in any script is compared (the
rouge-score tokenizer alone would drop every non-ASCII letter). The libraries load on
the first call (about 0.7 s), which the grader makes in its worker processes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from rapidfuzz import fuzz

METRICS = (
    "fuzzy_match",
    "bleu",
    "gleu",
    "meteor",
    *(f"rouge_{n}" for n in range(1, 6)),
    "rouge_l",
)
# Metrics of OpenAI's list that are a 400 here, with the reason.
UNSUPPORTED_METRICS = {
    "cosine": "cosine similarity needs an embedding model, which this service does not run; "
    f"use one of {', '.join(METRICS)}",
}

_WORD_OR_PUNCT = re.compile(r"\w+|[^\w\s]")
_WORD = re.compile(r"\w+")


def _tokens(text: str) -> list[str]:
    return _WORD_OR_PUNCT.findall(text.lower())


class _WordTokenizer:
    """rouge-score's tokenizer interface over Unicode word tokens."""

    def tokenize(self, text: str) -> list[str]:
        return _WORD.findall(text.lower())


class _NoSynonyms:
    """A WordNet stand-in with no synsets: METEOR matches exact words and stems only."""

    def synsets(self, word: str, pos: Any = None) -> list[Any]:
        return []


def _bleu(hyp: list[str], ref: list[str]) -> float:
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    order = min(4, len(hyp))
    weights = (1.0 / order,) * order
    smoothing = SmoothingFunction().method2  # add one to n-gram counts for n >= 2
    return float(sentence_bleu([ref], hyp, weights=weights, smoothing_function=smoothing))


def _gleu(hyp: list[str], ref: list[str]) -> float:
    from nltk.translate.gleu_score import sentence_gleu

    return float(sentence_gleu([ref], hyp, min_len=1, max_len=4))


def _meteor(hyp: list[str], ref: list[str]) -> float:
    from nltk.translate.meteor_score import meteor_score

    return float(meteor_score([ref], hyp, wordnet=_NoSynonyms()))


@functools.cache
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    kinds = [f"rouge{n}" for n in range(1, 6)] + ["rougeL"]
    return rouge_scorer.RougeScorer(kinds, tokenizer=_WordTokenizer())


def _rouge(kind: str) -> Callable[[str, str], float]:
    def score(hypothesis: str, reference: str) -> float:
        # rouge-score takes (target, prediction); one call scores every kind: cheap enough.
        return float(_rouge_scorer().score(reference, hypothesis)[kind].fmeasure)

    return score


_TOKEN_METRICS: dict[str, Callable[[list[str], list[str]], float]] = {
    "bleu": _bleu,
    "gleu": _gleu,
    "meteor": _meteor,
}
_TEXT_METRICS: dict[str, Callable[[str, str], float]] = {
    "rouge_l": _rouge("rougeL"),
    **{f"rouge_{n}": _rouge(f"rouge{n}") for n in range(1, 6)},
}


def similarity(metric: str, hypothesis: str, reference: str) -> float:
    """`metric`'s score of `hypothesis` against `reference`, in [0, 1]. Two texts with no
    tokens score 1, one empty against a non-empty one 0.

    >>> round(similarity("fuzzy_match", "kitten", "sitting"), 4)
    0.6154
    >>> similarity("rouge_1", "the cat sat", "The cat sat!")
    1.0
    >>> similarity("bleu", "a b c d", "a b c d")
    1.0
    """
    if metric in UNSUPPORTED_METRICS:
        raise ValueError(UNSUPPORTED_METRICS[metric])
    if metric == "fuzzy_match":
        return fuzz.ratio(hypothesis, reference) / 100.0
    hyp, ref = _tokens(hypothesis), _tokens(reference)
    if not hyp or not ref:
        return float(hyp == ref)
    if metric in _TOKEN_METRICS:
        score = _TOKEN_METRICS[metric](hyp, ref)
    else:
        score = _TEXT_METRICS[metric](hypothesis, reference)
    return min(1.0, max(0.0, score))
