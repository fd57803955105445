"""Quality checks that need no model: sentence length, readability, headings, keyword density.

Language-neutral on purpose (articles are English and Persian): words are Unicode ``\\w+`` runs,
sentences end at ``. ! ? ؟ …`` or a line break; readability is 100 minus penalties for long
sentences, not a syllable formula (those exist for English only).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

WORD = re.compile(r"\w+", re.UNICODE)
SENTENCE_END = re.compile(r"[.!?؟…。]+|\n+")
MD_HEADING = re.compile(r"^(#{1,6})\s+\S", re.MULTILINE)
HTML_HEADING = re.compile(r"<h([1-6])\b", re.IGNORECASE)

LONG_SENTENCE_WORDS = 25
COMFORTABLE_SENTENCE_WORDS = 15
HEADINGS_NEEDED_FROM_WORDS = 150  # a shorter text reads fine without headings
MAX_PARAGRAPH_WORDS = 200
KEYWORD_DENSITY_MAX = 3.0  # percent: above reads as keyword stuffing
KEYWORD_DENSITY_MIN = 0.3


@dataclass(frozen=True)
class Quality:
    word_count: int
    sentence_count: int
    avg_sentence_words: float
    long_sentence_ratio: float
    heading_count: int
    structure_valid: bool
    readability: float
    keyword: str | None
    keyword_density: float | None
    issues: list[str] = field(default_factory=list)


def words(text: str) -> list[str]:
    return WORD.findall(text)


def _heading_levels(body: str) -> list[int]:
    found = [(m.start(), len(m.group(1))) for m in MD_HEADING.finditer(body)]
    found += [(m.start(), int(m.group(1))) for m in HTML_HEADING.finditer(body)]
    return [level for _, level in sorted(found)]


def keyword_density(text: str, keyword: str) -> float:
    """Percent of the text's words that belong to occurrences of ``keyword`` (a word or phrase)."""
    text_words = [w.casefold() for w in words(text)]
    phrase = [w.casefold() for w in words(keyword)]
    if not text_words or not phrase:
        return 0.0
    n = len(phrase)
    hits = sum(1 for i in range(len(text_words) - n + 1) if text_words[i : i + n] == phrase)
    return round(hits * n * 100 / len(text_words), 3)


def analyze(body: str, keyword: str | None = None) -> Quality:
    issues: list[str] = []
    sentences = [s for s in (part.strip() for part in SENTENCE_END.split(body)) if words(s)]
    # headings are not sentences: leave them out of the lengths
    sentences = [s for s in sentences if not s.startswith("#")]
    lengths = [len(words(s)) for s in sentences]
    word_count = len(words(body))
    avg = round(sum(lengths) / len(lengths), 3) if lengths else 0.0
    long_ratio = (
        round(sum(1 for n in lengths if n > LONG_SENTENCE_WORDS) / len(lengths), 3) if lengths else 0.0
    )

    levels = _heading_levels(body)
    structure_valid = True
    if word_count >= HEADINGS_NEEDED_FROM_WORDS and not levels:
        structure_valid = False
        issues.append(f"no headings in {word_count} words")
    for previous, level in itertools.pairwise(levels):
        if level > previous + 1:
            structure_valid = False
            issues.append(f"heading level jumps from h{previous} to h{level}")
            break
    longest_paragraph = max((len(words(p)) for p in re.split(r"\n\s*\n", body)), default=0)
    if longest_paragraph > MAX_PARAGRAPH_WORDS:
        structure_valid = False
        issues.append(f"a paragraph of {longest_paragraph} words (more than {MAX_PARAGRAPH_WORDS})")

    readability = 100.0 - max(0.0, avg - COMFORTABLE_SENTENCE_WORDS) * 4 - long_ratio * 50
    readability = round(min(100.0, max(0.0, readability)), 1) if lengths else 0.0
    if long_ratio > 0.25:
        issues.append(f"{long_ratio:.0%} of sentences are longer than {LONG_SENTENCE_WORDS} words")
    if not lengths:
        issues.append("no sentences")

    density: float | None = None
    if keyword:
        density = keyword_density(body, keyword)
        if density > KEYWORD_DENSITY_MAX:
            issues.append(f"keyword {keyword!r} density {density:.1f}% is above {KEYWORD_DENSITY_MAX:g}%")
        elif density < KEYWORD_DENSITY_MIN:
            issues.append(f"keyword {keyword!r} density {density:.1f}% is below {KEYWORD_DENSITY_MIN:g}%")
    return Quality(
        word_count=word_count,
        sentence_count=len(lengths),
        avg_sentence_words=avg,
        long_sentence_ratio=long_ratio,
        heading_count=len(levels),
        structure_valid=structure_valid,
        readability=readability,
        keyword=keyword,
        keyword_density=density,
        issues=issues,
    )
