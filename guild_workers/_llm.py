"""A minimal client for an Anthropic-style messages API, on a shared httpx client."""

from __future__ import annotations

import os
from typing import Any

import attrs
import httpx

import guild

DEFAULT_RETRY_AFTER = 5.0


@attrs.frozen(kw_only=True)
class LLMSettings:
    """Where and how to call the model.

    Attributes:
        base_url: the API root; ``POST {base_url}/v1/messages`` is called.
        model: the model name sent with each request.
        api_key: sent as ``x-api-key``.
        timeout: seconds per HTTP request.
    """

    base_url: str
    model: str
    api_key: str = attrs.field(repr=False, default="")
    timeout: float = 60.0

    @classmethod
    def from_env(cls) -> LLMSettings | None:
        """From ``GUILD_LLM_BASE_URL``, ``GUILD_LLM_MODEL`` and ``GUILD_LLM_API_KEY``;
        ``None`` when no base URL is set."""
        base = os.environ.get("GUILD_LLM_BASE_URL")
        if not base:
            return None
        return cls(
            base_url=base,
            model=os.environ.get("GUILD_LLM_MODEL", "default"),
            api_key=os.environ.get("GUILD_LLM_API_KEY", ""),
        )


@attrs.frozen(kw_only=True)
class Completion:
    text: str
    input_tokens: int
    output_tokens: int


def _retry_after(response: httpx.Response) -> float:
    header = response.headers.get("retry-after")
    try:
        return max(0.0, float(header)) if header is not None else DEFAULT_RETRY_AFTER
    except ValueError:
        return DEFAULT_RETRY_AFTER


async def complete(
    client: httpx.AsyncClient,
    settings: LLMSettings,
    prompt: str,
    *,
    max_tokens: int,
    system: str | None,
) -> Completion:
    """One messages call.

    Raises:
        guild.Retry: the API said 429 or 5xx, or the connection failed (retry
            after its ``Retry-After``, or a default).
        guild.Reject: any other 4xx (the request itself is wrong), or a response
            without the expected fields.
    """
    body: dict[str, Any] = {
        "model": settings.model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": prompt}],
    }
    if system:
        body["system"] = system
    try:
        response = await client.post(
            settings.base_url.rstrip("/") + "/v1/messages",
            json=body,
            headers={"x-api-key": settings.api_key, "anthropic-version": "2023-06-01"},
            timeout=settings.timeout,
        )
    except httpx.TransportError as exc:
        raise guild.Retry(after=DEFAULT_RETRY_AFTER) from exc
    if response.status_code == 429 or response.status_code >= 500:
        raise guild.Retry(after=_retry_after(response))
    if response.status_code >= 400:
        raise guild.Reject(f"LLM API answered {response.status_code}: {response.text[:200]}")
    try:
        data = response.json()
        text = "".join(part["text"] for part in data["content"] if part.get("type") == "text")
        usage = data.get("usage", {})
        return Completion(
            text=text,
            input_tokens=int(usage.get("input_tokens", 0)),
            output_tokens=int(usage.get("output_tokens", 0)),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise guild.Reject(f"LLM API response has no text content: {exc!r}") from exc
