"""The ai family's settings: an OpenAI-compatible chat-completions API (OpenRouter, OpenAI, Ollama,
llama.cpp) and what its models cost (``TQ_LLM_*``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, SecretStr
from tq.settings import TqSettings


class LlmPrice(BaseModel):
    """What a model costs, in USD per million tokens (for ``AiRun.cost``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0.0)
    output: float = Field(ge=0.0)


class AiSettings(TqSettings):
    llm_base_url: str | None = Field(
        None,
        description="the OpenAI-compatible API of the ai family, e.g. https://openrouter.ai/api/v1; "
        'unset: AI jobs dead-letter with "no LLM provider configured"',
    )
    llm_api_key: SecretStr | None = Field(
        None, description="its bearer key (from a Secret in a cluster); local servers need none"
    )
    llm_model: str = Field(
        "openai/gpt-4o-mini", description="the model of every AI job not named in `TQ_LLM_MODELS`"
    )
    llm_models: dict[str, str] = Field(
        default_factory=dict,
        description='per-job models as JSON, e.g. `{"review-article": "anthropic/claude-3.5-sonnet"}`',
    )
    llm_timeout_s: PositiveFloat = Field(
        120.0, description="one chat-completion request, in all (a timeout is retried)"
    )
    llm_max_tokens: PositiveInt = Field(2048, description="most tokens a model may answer (`max_tokens`)")
    llm_temperature: float = Field(0.3, ge=0.0, le=2.0, description="`temperature` of every request")
    llm_json_mode: bool = Field(
        True,
        description='ask for `response_format: {"type": "json_object"}` where a job wants JSON (turn off '
        "for servers that refuse it)",
    )
    llm_prices: dict[str, LlmPrice] = Field(
        default_factory=dict,
        description='USD per million tokens per model, as JSON `{"MODEL": {"input": 0.15, "output": 0.6}}`, '
        "for `ai_run.cost` (unlisted: no cost)",
    )


@lru_cache(maxsize=1)
def get_ai_settings() -> AiSettings:
    return AiSettings()
