"""What a refusing LLM or embeddings provider says reaches clients (`turn.failed`, a failed
document's `error`) and workflow history, so it passes through one scrubbing helper."""

from __future__ import annotations

import httpx
import openai

from chatee.llm import rejection_message
from chatee.logging import register_secret


def refusal(body: object) -> openai.APIStatusError:
    request = httpx.Request("POST", "http://provider.invalid/v1/embeddings")
    response = httpx.Response(400, request=request)
    return openai.APIStatusError("Error code: 400", response=response, body=body)


def test_the_providers_words_are_kept_and_our_key_is_not() -> None:
    key = "sk-provider-key-7d1f0c"
    register_secret(key)
    said = rejection_message(
        refusal({"error": {"message": f"model 'x' not found for key {key} (Bearer {key})"}})
    )
    assert said.startswith("model 'x' not found for key ") and key not in said


def test_a_long_message_is_cut_after_scrubbing_and_a_bodyless_one_uses_the_status() -> None:
    key = "sk-another-provider-key-2b9e"
    register_secret(key)
    said = rejection_message(refusal({"message": "x" * 295 + key}))
    assert len(said) <= 300 and "sk-another" not in said
    assert rejection_message(refusal(None)) == "Error code: 400"
