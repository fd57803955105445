"""Structured answers: the JSON each job asks a model for, validated with pydantic.

Models often wrap JSON in a Markdown fence or a sentence; ``parse_answer`` takes the outermost
``{...}`` object and validates it. Anything else is a ``MalformedAnswer`` (retried, the raw answer
kept in AiEventLog by the handler).
"""

from __future__ import annotations

import json
from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from tq_services.ai.errors import MalformedAnswer

Phrase = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Score = Annotated[float, Field(ge=0, le=100)]


class Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TranslationAnswer(Answer):
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
    body: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class SeoAnswer(Answer):
    meta_title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
    meta_description: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]
    main_keyword: Phrase
    keywords: list[Phrase] = Field(min_length=1, max_length=50)
    seo_score: Score


class MetaAnswer(Answer):
    meta_title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    meta_description: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class KeywordsAnswer(Answer):
    main_keyword: Phrase
    keywords: list[Phrase] = Field(min_length=1)


class ReviewAnswer(Answer):
    originality_score: Score
    seo_score: Score
    ai_probability: Annotated[float, Field(ge=0, le=1)]
    summary: str = ""
    issues: list[str] = Field(default_factory=list)


A = TypeVar("A", bound=Answer)


def _json_object(raw: str) -> str:
    start, end = raw.find("{"), raw.rfind("}")
    return raw[start : end + 1] if 0 <= start < end else raw


def parse_answer(raw: str, model: type[A]) -> A:
    try:
        data = json.loads(_json_object(raw))
    except ValueError as exc:
        raise MalformedAnswer(f"model answer is not JSON: {exc}", raw) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise MalformedAnswer(f"model answer does not match {model.__name__}: {problems}", raw) from None


def schema_hint(model: type[Answer]) -> str:
    """The JSON Schema of an answer, to put in the prompt."""
    return json.dumps(model.model_json_schema(), ensure_ascii=False, separators=(",", ":"))
