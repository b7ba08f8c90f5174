"""Text similarity metrics of the `text_similarity` grader, each a score in [0, 1].

fuzzy_match is rapidfuzz's normalised Indel ratio on the raw text; the n-gram metrics
(bleu, gleu, rouge_1..rouge_5, rouge_l) compare lowercased word and punctuation tokens.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable

from rapidfuzz import fuzz
from rapidfuzz.distance import LCSseq

_WORD = re.compile(r"\w+|[^\w\s]")


def _tokens(text: str) -> list[str]:
    # n-gram metrics compare lowercased word and punctuation tokens.
    return _WORD.findall(text.lower())


def _ngrams(tokens: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _bleu(hyp: list[str], ref: list[str]) -> float:
    # Sentence BLEU up to 4-grams, never above the hypothesis length (short answers would
    # otherwise always score 0), with add-one smoothing for n >= 2 (Lin & Och, 2004).
    order = min(4, len(hyp))
    log_p = 0.0
    for n in range(1, order + 1):
        h, r = _ngrams(hyp, n), _ngrams(ref, n)
        match, total = sum((h & r).values()), sum(h.values())
        if n == 1 and match == 0:
            return 0.0
        log_p += math.log((match + (n > 1)) / (total + (n > 1))) / order
    brevity = min(0.0, 1.0 - len(ref) / len(hyp))
    return math.exp(log_p + brevity)


def _gleu(hyp: list[str], ref: list[str]) -> float:
    # Google-BLEU (Wu et al., 2016): min(precision, recall) over all 1- to 4-grams.
    match = total_h = total_r = 0
    for n in range(1, 5):
        h, r = _ngrams(hyp, n), _ngrams(ref, n)
        match += sum((h & r).values())
        total_h, total_r = total_h + sum(h.values()), total_r + sum(r.values())
    return match / max(total_h, total_r)


def _f1(overlap: float, n_hyp: int, n_ref: int) -> float:
    if overlap == 0:
        return 0.0
    precision, recall = overlap / n_hyp, overlap / n_ref
    return 2 * precision * recall / (precision + recall)


def _rouge_n(n: int) -> Callable[[list[str], list[str]], float]:
    def rouge(hyp: list[str], ref: list[str]) -> float:
        h, r = _ngrams(hyp, n), _ngrams(ref, n)
        if not h or not r:  # shorter than n tokens: only an exact match counts
            return float(hyp == ref)
        return _f1(sum((h & r).values()), sum(h.values()), sum(r.values()))

    return rouge


def _rouge_l(hyp: list[str], ref: list[str]) -> float:
    return _f1(LCSseq.similarity(hyp, ref), len(hyp), len(ref))


_TOKEN_METRICS: dict[str, Callable[[list[str], list[str]], float]] = {
    "bleu": _bleu,
    "gleu": _gleu,
    "rouge_l": _rouge_l,
    **{f"rouge_{n}": _rouge_n(n) for n in range(1, 6)},
}


def similarity(metric: str, hypothesis: str, reference: str) -> float:
    """Score in [0, 1]. fuzzy_match is rapidfuzz's normalised Indel ratio on the raw text;
    the n-gram metrics work on lowercased tokens.

    >>> round(similarity("fuzzy_match", "kitten", "sitting"), 4)
    0.6154
    >>> similarity("rouge_1", "the cat sat", "The cat sat!")
    0.8571428571428571
    >>> similarity("bleu", "a b c d", "a b c d")
    1.0
    """
    if metric == "fuzzy_match":
        return fuzz.ratio(hypothesis, reference) / 100.0
    hyp, ref = _tokens(hypothesis), _tokens(reference)
    if not hyp or not ref:
        return float(hyp == ref)
    return _TOKEN_METRICS[metric](hyp, ref)
