"""A client for OpenAI-compatible chat-completion APIs (OpenRouter, OpenAI, Ollama, llama.cpp, vLLM).

``complete`` POSTs ``{base_url}/chat/completions`` with a bearer key when one is set, within
``llm_timeout_s`` in all, and reads ``choices[0].message.content`` and ``usage``
(``prompt_tokens``/``completion_tokens``). Failures are classified for the engine:

- no provider configured: ``LlmNotConfigured`` (dead-letter);
- 429 with ``Retry-After`` (the provider's quota is spent): ``LlmRateLimited``, a
  ``tq.errors.RateLimited``: the job goes back uncharged and the queue pauses that long on every
  replica;
- 408, 409, 425, 429 without ``Retry-After``, 5xx, timeouts, connection errors, a 200 without a
  readable answer: ``LlmUnavailable`` (retried with the queue's backoff);
- any other 4xx (bad request, key refused, unknown model): ``LlmRejected`` (dead-letter), with
  the provider's own error message in the reason.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from tq_services.ai.errors import LlmNotConfigured, LlmRateLimited, LlmRejected, LlmUnavailable
from tq_services.ai.settings import AiSettings

NOT_CONFIGURED = (
    "no LLM provider configured: set TQ_LLM_BASE_URL (and TQ_LLM_API_KEY, TQ_LLM_MODEL) "
    "to an OpenAI-compatible API"
)
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})
REASON_MAX = 500

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class Completion:
    content: str
    model: str  # the model the provider says answered (OpenRouter may route), else the one asked for
    tokens_in: int
    tokens_out: int
    cost: float | None
    duration_ms: float


class _Usage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _AnswerMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    content: str | None = None


class _Choice(BaseModel):
    model_config = ConfigDict(extra="ignore")
    message: _AnswerMessage


class _ChatResponse(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    choices: list[_Choice]
    usage: _Usage | None = None


def model_for(settings: AiSettings, job_name: str, requested: str | None = None) -> str:
    return requested or settings.llm_models.get(job_name) or settings.llm_model


def cost_of(settings: AiSettings, model: str, tokens_in: int, tokens_out: int) -> float | None:
    price = settings.llm_prices.get(model)
    if price is None:
        return None
    return round((tokens_in * price.input + tokens_out * price.output) / 1_000_000, 8)


def _provider_reason(response: httpx.Response) -> str:
    """The provider's own words: OpenAI-style ``{"error": {"message": ...}}``, else the body's start."""
    text = response.text
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            text = str(error["message"])
        elif isinstance(error, str):
            text = error
    text = " ".join(text.split())
    return text[:REASON_MAX] or response.reason_phrase


@lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    """One verifying TLS context per process: building it (loading the CA bundle) costs ~10-30 ms,
    more than a local model's answer."""
    return httpx.create_ssl_context()


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (the HTTP-date form is rare from APIs: then the queue's backoff)."""
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


async def complete(
    settings: AiSettings, messages: list[Message], model: str, *, want_json: bool = False
) -> Completion:
    if not settings.llm_base_url:
        raise LlmNotConfigured(NOT_CONFIGURED)
    url = settings.llm_base_url.rstrip("/") + "/chat/completions"
    headers = {"Content-Type": "application/json"}
    if settings.llm_api_key is not None and settings.llm_api_key.get_secret_value():
        headers["Authorization"] = f"Bearer {settings.llm_api_key.get_secret_value()}"
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m.role, "content": m.content} for m in messages],
        "max_tokens": settings.llm_max_tokens,
        "temperature": settings.llm_temperature,
    }
    if want_json and settings.llm_json_mode:
        body["response_format"] = {"type": "json_object"}

    started = time.perf_counter()
    timeout = settings.llm_timeout_s
    try:
        async with asyncio.timeout(timeout), httpx.AsyncClient(timeout=timeout, verify=_tls()) as client:
            response = await client.post(url, json=body, headers=headers)
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise LlmUnavailable(
            f"LLM provider timed out after {time.perf_counter() - started:.1f} s "
            f"(TQ_LLM_TIMEOUT_S={timeout:g}): {type(exc).__name__}"
        ) from None
    except (httpx.HTTPError, OSError) as exc:
        raise LlmUnavailable(f"LLM provider unreachable: {type(exc).__name__}: {exc}"[:1000]) from None
    duration_ms = round((time.perf_counter() - started) * 1000, 3)

    status = response.status_code
    if status != 200:
        reason = f"LLM provider answered {status} for model {model}: {_provider_reason(response)}"
        retry_after = _retry_after(response)
        if status == 429 and retry_after is not None:  # the quota is spent: slow the whole queue
            raise LlmRateLimited(retry_after, reason)
        if status in RETRYABLE_STATUSES or status >= 500:
            raise LlmUnavailable(reason, retry_after=retry_after)
        raise LlmRejected(reason)
    try:
        parsed = _ChatResponse.model_validate_json(response.content)
        content = parsed.choices[0].message.content if parsed.choices else None
    except ValidationError as exc:
        raise LlmUnavailable(
            f"LLM provider answered 200 without a chat completion: {exc.error_count()} error(s), "
            f"body starts {response.text[:200]!r}"
        ) from None
    if content is None:
        raise LlmUnavailable(f"LLM provider answered 200 with no message content: {response.text[:200]!r}")
    usage = parsed.usage or _Usage()
    answered_by = parsed.model or model
    return Completion(
        content=content,
        model=answered_by,
        tokens_in=usage.prompt_tokens,
        tokens_out=usage.completion_tokens,
        # priced by the model asked for: that is the name the operator configured prices under
        cost=cost_of(settings, model, usage.prompt_tokens, usage.completion_tokens),
        duration_ms=duration_ms,
    )
