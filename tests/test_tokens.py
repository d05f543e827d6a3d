"""Token counting is exact and never needs the network."""

from __future__ import annotations

import hashlib
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tiktoken
from tiktoken_ext import openai_public

from expertprompting import count_tokens
from expertprompting._method import tokens as tk
from expertprompting._method.errors import ConfigurationError


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty TIKTOKEN_CACHE_DIR and no memoised encodings."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    tk.forget_encodings()
    tk._counter.cache_clear()
    yield tmp_path
    tk.forget_encodings()
    tk._counter.cache_clear()


def test_known_counts_o200k() -> None:
    # Reference values from OpenAI's tokenizer for o200k_base.
    assert count_tokens("hello world", model="gpt-4o") == 2
    assert tk.get_encoding("o200k_base").encode("hello world") == [24912, 2375]


def test_known_counts_cl100k() -> None:
    assert tk.get_encoding("cl100k_base").encode("hello world") == [15339, 1917]
    assert count_tokens("hello world", model="gpt-3.5-turbo") == 2


def test_chat_overheads_follow_openai_rules() -> None:
    text = "Explain how vaccines train the immune system."
    n = count_tokens(text, model="gpt-4o")
    one = [{"role": "user", "content": text}]
    # 3 per message + role + content + 3 reply priming
    assert count_tokens(one, model="gpt-4o") == 3 + 1 + n + 3
    named = [{"role": "user", "content": text, "name": "bob"}]
    assert count_tokens(named, model="gpt-4o") == 3 + 1 + n + 1 + 1 + 3
    two = [{"role": "system", "content": "Be brief."}, *one]
    assert count_tokens(two, model="gpt-4o") == count_tokens(one, model="gpt-4o") + 3 + 1 + 3


def test_special_token_text_is_counted_as_plain_text() -> None:
    assert count_tokens("<|endoftext|>", model="gpt-4o") > 1


def test_offline_load_fills_tiktoken_cache_with_verified_file(fresh_cache: Path) -> None:
    enc = tk.get_encoding("cl100k_base")
    files = [p for p in fresh_cache.iterdir() if not p.name.endswith(".tmp")]
    assert len(files) == 1
    digest = hashlib.sha256(files[0].read_bytes()).hexdigest()
    assert digest == "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
    assert enc.n_vocab == 100277
    # tiktoken itself now finds the file in its cache: no download attempted.
    tiktoken.registry.ENCODINGS.pop("cl100k_base", None)
    assert tiktoken.get_encoding("cl100k_base").encode("hello world") == [15339, 1917]


def test_corrupt_cache_file_is_replaced_by_bundled_copy(fresh_cache: Path) -> None:
    tk.get_encoding("o200k_base")
    (cached,) = [p for p in fresh_cache.iterdir()]
    cached.write_bytes(b"garbage")
    tk.forget_encodings()
    enc = tk.get_encoding("o200k_base")
    assert enc.encode("hello world") == [24912, 2375]
    assert cached.read_bytes() != b"garbage"


def test_disabled_cache_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    tk.forget_encodings()
    try:
        assert tk.get_encoding("o200k_base").encode("hello world") == [24912, 2375]
    finally:
        tk.forget_encodings()


def test_unknown_model_falls_back_to_o200k_with_warning() -> None:
    tk.encoding_name_for_model.cache_clear()
    with pytest.warns(UserWarning, match="o200k_base"):
        name = tk.encoding_name_for_model("my-local-llama")
    assert name == "o200k_base"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert count_tokens("hello world", model="my-local-llama") == 2


def test_unknown_encoding_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="Unknown token encoding"):
        tk.get_encoding("no_such_base")


def test_encoding_without_local_data_says_what_to_do(fresh_cache: Path) -> None:
    with pytest.raises(ConfigurationError, match="TIKTOKEN_CACHE_DIR"):
        tk.get_encoding("r50k_base")


def test_counter_protocol() -> None:
    counter = tk.TiktokenCounter("gpt-4o-mini")
    assert isinstance(counter, tk.TokenCounter)
    assert counter.count_text("hello world") == 2


def test_threads_build_an_encoding_once(monkeypatch: pytest.MonkeyPatch) -> None:
    tk.forget_encodings()
    built: list[str] = []
    constructors = openai_public.ENCODING_CONSTRUCTORS
    real = constructors["o200k_base"]

    def counting() -> dict[str, Any]:
        built.append("o200k_base")
        result: dict[str, Any] = real()
        return result

    monkeypatch.setitem(constructors, "o200k_base", counting)
    found: list[tiktoken.Encoding] = []
    threads = [
        threading.Thread(target=lambda: found.append(tk.get_encoding("o200k_base")))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert built == ["o200k_base"]
    assert all(e is found[0] for e in found)
