"""What the text stages say to a text model: chat messages, requests, completions, and the
``TextModel`` protocol the stages call.

The backends behind the protocol (an OpenAI-compatible HTTP API, a local transformers causal LM)
are model code and live in ``variant_pipeline.models.text``; the stages only see this interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant"]
_ROLES = ("system", "user", "assistant")


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str

    def __post_init__(self) -> None:
        if self.role not in _ROLES:
            raise ValueError(f"chat role must be one of {_ROLES}, got {self.role!r}")
        if not isinstance(self.content, str):
            raise TypeError(f"chat content must be a string, got {type(self.content).__name__}")

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class ChatRequest:
    """One call's arguments, for batch calls and for the trace."""

    messages: tuple[ChatMessage, ...]
    temperature: float
    max_tokens: int
    json_mode: bool = False
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "messages": [m.to_dict() for m in self.messages],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "json_mode": self.json_mode,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float
    raw: dict[str, Any] = field(default_factory=dict)  # the backend's full answer, JSON-able
    finish_reason: str | None = None  # "stop", "length", ... when the backend says

    @property
    def total_tokens(self) -> int | None:
        if self.prompt_tokens is None and self.completion_tokens is None:
            return None
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)

    def usage(self) -> dict[str, int | None]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }

# --------------------------------------------------------------------------------------------
# Protocol
# --------------------------------------------------------------------------------------------


@runtime_checkable
class TextModel(Protocol):
    @property
    def name(self) -> str:
        """Model id for traces (e.g. ``gpt-4o-mini`` or the local path)."""
        ...

    def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float,
        max_tokens: int,
        json_mode: bool = False,
        seed: int | None = None,
    ) -> Completion: ...


def complete_batch(model: TextModel, requests: Sequence[ChatRequest]) -> list[Completion]:
    """Run several requests; uses the backend's own batch call when it has one."""
    own = getattr(model, "complete_batch", None)
    if callable(own):
        return list(own(requests))
    return [
        model.complete(r.messages, temperature=r.temperature, max_tokens=r.max_tokens,
                       json_mode=r.json_mode, seed=r.seed)
        for r in requests
    ]
