"""LLM providers: any OpenAI-compatible endpoint through the official `openai` SDK.

Clients are built with `max_retries=0`: the Temporal activity retry policy is the one place
that retries, so a retry is visible (`step.retry`) and never doubled.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import openai
import tiktoken
from openai import AsyncOpenAI

from chatee.config import Settings
from chatee.logging import scrub

# answers the same request will always get again: not worth a retry
PERMANENT_STATUS = frozenset({400, 401, 403, 404, 422})


class LLMNotConfigured(Exception):
    pass


def rejection_message(exc: openai.APIStatusError) -> str:
    """The provider's own words for a refused request, scrubbed: they reach clients and
    workflow history, and a provider may echo parts of the request, our API key included."""
    body = exc.body
    message = exc.message
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            message = str(error["message"])
    return scrub(message)[:300]


@dataclass(frozen=True)
class Provider:
    name: str
    base_url: str | None
    api_key: str | None


def provider_names(settings: Settings) -> list[str]:
    return ["openai", "deepseek", *settings.llm_providers]


def provider(settings: Settings, name: str) -> Provider:
    if name in settings.llm_providers:
        extra = settings.llm_providers[name]
        key = extra.api_key.get_secret_value() if extra.api_key else None
        return Provider(name, extra.base_url, key)
    if name == "openai":
        key = settings.llm_openai_api_key
        return Provider(name, settings.llm_openai_base_url, key.get_secret_value() if key else None)
    if name == "deepseek":
        key = settings.llm_deepseek_api_key
        return Provider(
            name, settings.llm_deepseek_base_url, key.get_secret_value() if key else None
        )
    known = ", ".join(provider_names(settings))
    raise LLMNotConfigured(f"unknown LLM provider {name!r} (known: {known})")


class ClientPool:
    """One AsyncOpenAI client (and HTTP connection pool) per provider, per process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._clients: dict[str, AsyncOpenAI] = {}

    def get(self, name: str) -> AsyncOpenAI:
        if name not in self._clients:
            p = provider(self.settings, name)
            if not p.api_key and not p.base_url:
                env = f"CHATEE_LLM_{name.upper()}"
                raise LLMNotConfigured(
                    f"no LLM is configured for provider {name!r}: set {env}_API_KEY "
                    f"(and {env}_BASE_URL for an OpenAI-compatible server such as vLLM or Ollama)"
                )
            self._clients[name] = AsyncOpenAI(
                api_key=p.api_key or "not-needed", base_url=p.base_url, max_retries=0
            )
        return self._clients[name]

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


@lru_cache(maxsize=1)
def _encoding() -> tiktoken.Encoding | None:
    try:
        return tiktoken.get_encoding("cl100k_base")
    except Exception:  # the BPE file is fetched once from the network; offline we count words
        return None


def estimate_tokens(text: str) -> int:
    """Token count when the provider reports no usage."""
    encoding = _encoding()
    if encoding:
        return len(encoding.encode(text))
    return max(1, round(len(text.split()) * 4 / 3)) if text else 0
