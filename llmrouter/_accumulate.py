"""What a stream has delivered so far (pure): content, tool-call fragments, usage.

Used to tell whether a stream may still fail over (nothing delivered yet), to fill
:class:`StreamInterruptedError` with the partial output, and to rebuild the whole answer.
"""

from __future__ import annotations

from typing import Any

from llmrouter.types import ChatCompletionChunk

__all__ = ["ChunkAccumulator"]


class ChunkAccumulator:
    """Folds the chunks of choice 0 into text and tool calls (merged per ``index``)."""

    __slots__ = ("delivered", "finish_reason", "model", "parts", "tool_calls", "usage")

    def __init__(self) -> None:
        self.delivered = False
        self.model = ""  # the model that answered, as its first chunks name it
        self.parts: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: Any = None

    @property
    def text(self) -> str:
        """The content delivered so far."""
        return "".join(self.parts)

    def add(self, chunk: ChatCompletionChunk) -> None:
        """Account for one chunk handed to the caller."""
        if not self.delivered and chunk.model:
            self.model = chunk.model
        if chunk.usage is not None:
            self.usage = chunk.usage
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta.content:
                self.parts.append(delta.content)
                self.delivered = True
            if delta.tool_calls:
                self.delivered = True
                for fragment in delta.tool_calls:
                    self._merge(fragment.model_dump(exclude_none=True))
            if not self.delivered and delta.model_extra:
                # Reasoning text (vLLM/Ollama "reasoning", llama.cpp "reasoning_content") is
                # output too: once the caller has it, resending would show it twice.
                extra = delta.model_extra
                if extra.get("reasoning") or extra.get("reasoning_content"):
                    self.delivered = True
            if choice.finish_reason is not None:
                self.finish_reason = choice.finish_reason

    def _merge(self, fragment: dict[str, Any]) -> None:
        # Keep the first id/type/name, concatenate arguments (openai-chat.md section 3).
        call = self.tool_calls.setdefault(
            fragment["index"],
            {
                "id": None,
                "type": "function",
                "function": {"name": None, "arguments": ""},
            },
        )
        if call["id"] is None and fragment.get("id"):
            call["id"] = fragment["id"]
        function = fragment.get("function") or {}
        if call["function"]["name"] is None and function.get("name"):
            call["function"]["name"] = function["name"]
        call["function"]["arguments"] += function.get("arguments") or ""

    def tool_call_list(self) -> list[dict[str, Any]]:
        """The tool calls delivered so far, in index order."""
        return [self.tool_calls[i] for i in sorted(self.tool_calls)]
