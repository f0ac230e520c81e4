"""Each bot's full-text index in this process's memory: the text half of a hybrid search without ``ts_rank``.

With ``KnowledgeConfig.memory_vectors`` above 0 a bot's chunks are loaded once
(:func:`botloom.core.knowledge.vectors.load`, with their vectors and the bot's
document fingerprint): their ``search`` tsvectors become an inverted index, lexeme
→ the chunks holding it and what the lexeme adds to each chunk's ``ts_rank``.
A search then asks PostgreSQL only for the query's lexemes (its own
``to_tsvector``, so stemming and stop words are PostgreSQL's) and the fingerprint,
in one light statement, and ranks the matches here: the same lexemes, the same
budget of matches and the same scores as the statement of
:func:`botloom.core.knowledge.search.search_sql` (``ts_rank`` with
``TEXT_RANK_WEIGHTS`` and normalisation 0), without ranking up to
``max_text_matches`` chunks in PostgreSQL on every turn.

``ts_rank`` of an OR query (PostgreSQL's ``calc_rank_or``): for each distinct
query lexeme the chunk holds, with the weights ``w`` of its positions in order,
``(max(w) + Σ w_j / j² − max(w) / m²) / 1.64493406685`` (``m`` the first
position of the largest weight); the sum over the lexemes is divided by the
number of distinct query lexemes. That share of each lexeme depends only on the
chunk, so it is computed once when the index is built.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

RANK_WEIGHTS = {"D": 0.1, "C": 0.2, "B": 1.0, "A": 1.0}
"""``ts_rank``'s weight of each label: ``search.TEXT_RANK_WEIGHTS`` ({D, C, B, A})."""
ZETA_2 = 1.64493406685
"""π²/6, as ``ts_rank`` divides by it."""
ENTRY = re.compile(r"'((?:[^'\\]|''|\\.)*)'(?::([0-9A-D,]+))?")
"""One lexeme of a tsvector's text form, with its positions (``'wi-fi':10B,31``)."""


def parse_tsvector(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """The lexemes of a tsvector's text form and the labels of their positions in order (``D`` when none)."""
    out: list[tuple[str, tuple[str, ...]]] = []
    for raw, positions in ENTRY.findall(text):
        lexeme = raw.replace("''", "'").replace("\\\\", "\\") if ("'" in raw or "\\" in raw) else raw
        labels = tuple(p[-1] if p[-1].isalpha() else "D" for p in positions.split(",")) if positions else ("D",)
        out.append((lexeme, labels))
    return out


def lexeme_share(labels: Sequence[str]) -> float:
    """What one lexeme with positions of these labels adds to a chunk's ``ts_rank`` (before the division)."""
    total = 0.0
    best = -1.0
    at = 0
    for j, label in enumerate(labels):
        value = RANK_WEIGHTS[label]
        total += value / ((j + 1) * (j + 1))
        if value > best:
            best, at = value, j
    return (best + total - best / ((at + 1) * (at + 1))) / ZETA_2


@dataclass(frozen=True)
class Postings:
    """The chunks (indices into the bot's chunks) holding one lexeme, and its share of their rank."""

    chunks: np.ndarray
    shares: np.ndarray


class Lexicon:
    """One bot's chunks as an inverted index of their tsvectors (see the module docstring)."""

    def __init__(self, vectors: Iterable[str]) -> None:
        """Index the tsvectors (text form) of the bot's chunks, in the order of its chunk list."""
        chunks: dict[str, list[int]] = {}
        shares: dict[str, list[float]] = {}
        known: dict[tuple[str, ...], float] = {}  # the share of each sequence of labels, computed once
        size = 0
        for index, text in enumerate(vectors):
            size = index + 1
            for lexeme, labels in parse_tsvector(text or ""):
                share = known.get(labels)
                if share is None:
                    share = known[labels] = lexeme_share(labels)
                found = chunks.get(lexeme)
                if found is None:
                    chunks[lexeme] = [index]
                    shares[lexeme] = [share]
                else:
                    found.append(index)
                    shares[lexeme].append(share)
        self.size = size
        self.postings = {
            lexeme: Postings(np.array(found, dtype=np.int32), np.array(shares[lexeme], dtype=np.float64))
            for lexeme, found in chunks.items()
        }
        self.compounds: dict[str, str] = {}
        """A hyphenated lexeme's joined form → the lexeme (``wifi`` → ``wi-fi``), as ``knowledge_terms_compounds``."""
        for lexeme in sorted(self.postings):
            if "-" in lexeme:
                self.compounds.setdefault(lexeme.replace("-", ""), lexeme)

    @property
    def nbytes(self) -> int:
        """About the memory the index takes."""
        return sum(p.chunks.nbytes + p.shares.nbytes + 120 for p in self.postings.values())

    def df(self, lexeme: str) -> int:
        """How many chunks hold ``lexeme``."""
        found = self.postings.get(lexeme)
        return 0 if found is None else len(found.chunks)

    def query_terms(self, asked: Sequence[str], budget: int) -> list[str]:
        """The lexemes the full-text query ORs, as ``search_sql``'s ``words`` and ``terms``.

        A lexeme the bot writes hyphenated is replaced by that form, a hyphenated
        one is joined by its joined form when the bot has it; then the commonest are
        left out until the rest match at most ``budget`` chunks (summed document
        frequencies, rarest first, ties by lexeme).
        """
        words: set[str] = set()
        for lexeme in asked:
            words.add(self.compounds.get(lexeme, lexeme))
            if "-" in lexeme:
                joined = lexeme.replace("-", "")
                if joined in self.postings:
                    words.add(joined)
        kept: list[str] = []
        running = 0
        for lexeme in sorted(words, key=lambda w: (self.df(w), w)):
            running += self.df(lexeme)
            if running > budget:
                break
            kept.append(lexeme)
        return kept

    def rank(self, terms: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``ts_rank`` of every chunk for the OR of ``terms`` (float32, as PostgreSQL has it); which chunks match."""
        found = [p for p in (self.postings.get(term) for term in terms) if p is not None]
        if not found:
            return np.zeros(self.size, dtype=np.float32), np.zeros(self.size, dtype=bool)
        chunks = np.concatenate([p.chunks for p in found])
        shares = np.concatenate([p.shares for p in found])
        scores = np.bincount(chunks, weights=shares, minlength=self.size) / len(terms)
        matched = np.bincount(chunks, minlength=self.size) > 0
        return scores.astype(np.float32), matched
