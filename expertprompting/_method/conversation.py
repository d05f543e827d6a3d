"""Conversations: an OpenAI-style message list, checked and read the way the method needs it.

The identity is written for the conversation's *first* user turn, with the system messages
before it as context; the answer request repeats the conversation with that first turn
rewritten as step 2 writes an instruction. :func:`read_conversation` checks a message list
(the shapes OpenAI clients send) and returns a :class:`Conversation`. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError
from .wire import ChatMessage

__all__ = ["Conversation", "read_conversation"]

_ROLES = ("system", "developer", "user", "assistant")


@dataclass(frozen=True)
class Conversation:
    """A checked conversation.

    ``messages`` are the turns as they will be sent (``developer`` sent as ``system``, text
    parts joined); ``first`` is the index of the first user turn, the one the identity is
    written for; ``context`` the system messages before it, joined, or None. ``input`` is only
    set for a one-instruction conversation built by :meth:`single` (Alpaca's separate input).
    """

    messages: tuple[ChatMessage, ...]
    first: int
    context: str | None = None
    input: str | None = None

    @classmethod
    def single(cls, instruction: str, input: str | None = None) -> Conversation:
        """The conversation of one instruction: what ``ep.answer`` answers."""
        return cls(({"role": "user", "content": instruction},), 0, None, input)

    @property
    def instruction(self) -> str:
        """The first user turn: what the expert identity is written for."""
        return self.messages[self.first]["content"]

    @property
    def latest(self) -> str:
        """The last user turn: what this answer answers."""
        return self.messages[-1]["content"]

    @property
    def user_turns(self) -> int:
        return sum(1 for m in self.messages if m["role"] == "user")

    @property
    def is_single(self) -> bool:
        """One user turn and nothing else: the request is exactly ``ep.answer``'s."""
        return len(self.messages) == 1

    def key(self) -> str:
        """What identifies the conversation for its identity: its first turn and context."""
        text = json.dumps([self.context, self.instruction, self.input], ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def rewritten(self, first_turn: str) -> list[ChatMessage]:
        """The messages with the first user turn replaced by ``first_turn``."""
        messages = [dict(m) for m in self.messages]
        messages[self.first]["content"] = first_turn
        return messages  # type: ignore[return-value]


def _text(content: Any, where: str) -> str:
    """A message's content as text: a string, or a list of text parts (joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces = []
        for j, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise ConfigurationError(
                    f"{where}.content[{j}] is a {kind!r} part; only text parts "
                    '({"type": "text", "text": "..."}) are supported.'
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise ConfigurationError(f"{where}.content[{j}].text must be a string.")
            pieces.append(text)
        return "".join(pieces)
    raise ConfigurationError(
        f"{where}.content must be a string or a list of text parts, not "
        f"{'null' if content is None else type(content).__name__}."
    )


def read_conversation(messages: Sequence[Mapping[str, Any]]) -> Conversation:
    """Check an OpenAI-style message list and read it as a :class:`Conversation`.

    Roles ``system``, ``developer`` (sent as ``system``), ``user`` and ``assistant``; content a
    string or a list of text parts. There must be a user turn, and the last message must be
    one. Anything else is a :class:`~expertprompting.ConfigurationError` naming the message.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ConfigurationError(
            "messages must be a list of {'role': ..., 'content': ...} messages, not "
            f"{type(messages).__name__}."
        )
    if not messages:
        raise ConfigurationError("messages is empty; send at least one user message.")
    checked: list[ChatMessage] = []
    first: int | None = None
    context: list[str] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise ConfigurationError(f"{where} must be an object with role and content.")
        role = message.get("role")
        if role not in _ROLES:
            raise ConfigurationError(
                f"{where}.role is {role!r}; use one of {', '.join(map(repr, _ROLES))}."
            )
        text = _text(message.get("content"), where)
        if role == "user" and first is None:
            if not text.strip():
                raise ConfigurationError(f"{where} (the first user turn) is empty.")
            first = i
        elif role in ("system", "developer") and first is None:
            context.append(text)
        checked.append({"role": "system" if role == "developer" else role, "content": text})
    if first is None:
        raise ConfigurationError("messages has no user turn; add one to answer.")
    if checked[-1]["role"] != "user":
        raise ConfigurationError(
            f"the last message (messages[{len(checked) - 1}]) is a {checked[-1]['role']} "
            "turn; the conversation must end with the user turn to answer."
        )
    joined = "\n\n".join(c for c in context if c.strip())
    return Conversation(tuple(checked), first, joined or None)
