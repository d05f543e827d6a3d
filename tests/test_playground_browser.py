"""The playground page (``GET /``) in a real browser: Debian's chromium driven by Playwright.

The real server app runs on 127.0.0.1 in front of ``FakeOpenAIServer``; the tests type into the
page as a user would and check what it shows against what the fake upstream received and
answered. They skip, saying why, when chromium or Playwright is missing, unless
``EP_REQUIRE_BROWSER=1`` (set by ``.ci/run``), when they fail instead.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import importlib.util
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from expertprompting import RetryPolicy
from expertprompting.testing import FakeOpenAIServer, RecordedRequest, Reply

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Request

CHROMIUM = Path("/usr/bin/chromium")
# Headless chromium as root in a container: no sandbox, no /dev/shm, no GPU. The resolver rule
# keeps the browser itself off the network: only 127.0.0.1 resolves.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
UPSTREAM_MODEL = "gpt-4o-mini"
CLIENT_KEY = "sk-playground-test-key"

INSTRUCTION = "Explain how vaccines train the immune system."
IDENTITY = (
    "You are an immunologist with twenty years of research on vaccines & <b>adaptive</b> immunity."
)
EXPERT_ANSWER = "Vaccines show the immune system a harmless piece of a pathogen, so it remembers."
VANILLA_ANSWER = "A vaccine teaches the body to recognise a germ."
PARTIAL = "Vaccines show "
# A stream that sends one piece of text, then a chunk that is not JSON: the upstream broke off.
_PIECE = {
    "id": "chatcmpl-broken",
    "object": "chat.completion.chunk",
    "created": 0,
    "model": UPSTREAM_MODEL,
    "choices": [{"index": 0, "delta": {"role": "assistant", "content": PARTIAL}}],
}
BROKEN_STREAM = f"data: {json.dumps(_PIECE)}\n\ndata: {{not json\n\n"
# Distinct figures per kind of upstream request, so every sum on the page is checkable.
USAGE = {
    "identity": {"prompt_tokens": 301, "completion_tokens": 41, "total_tokens": 342},
    "expert": {"prompt_tokens": 157, "completion_tokens": 19, "total_tokens": 176},
    "vanilla": {"prompt_tokens": 23, "completion_tokens": 11, "total_tokens": 34},
}


def require_browser(executable: Path = CHROMIUM) -> None:
    """Skip (or fail under ``EP_REQUIRE_BROWSER=1``) when Playwright or chromium is missing."""
    missing = []
    if importlib.util.find_spec("playwright") is None:
        missing.append('playwright (pip install -e ".[test]")')
    if not executable.exists():
        missing.append(f"{executable} (apt-get install chromium)")
    if not missing:
        return
    reason = "the playground browser test needs " + " and ".join(missing)
    if os.environ.get("EP_REQUIRE_BROWSER") == "1":
        pytest.fail(reason + "; EP_REQUIRE_BROWSER=1 makes that a failure")
    pytest.skip(reason)


def test_missing_browser_skips_or_fails_as_configured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    absent = tmp_path / "no-chromium"
    monkeypatch.delenv("EP_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-chromium"):
        require_browser(absent)
    monkeypatch.setenv("EP_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="EP_REQUIRE_BROWSER=1"):
        require_browser(absent)


def test_page_is_one_self_contained_file() -> None:
    """Nothing to fetch (it must work offline) and no text ever parsed as HTML."""
    page = (
        importlib.resources.files("expertprompting._serve")
        .joinpath("playground.html")
        .read_text(encoding="utf-8")
    )
    assert re.search(r"\b(src|href)\s*=", page) is None
    assert re.search(r"<link\b|@import|url\(", page) is None
    assert re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", page) is None
    assert "connect-src 'self'" in page  # its Content-Security-Policy: its own server only


# The upstream


def kind_of(request: RecordedRequest) -> str:
    """Which step an upstream chat request is: the identity (step 1), an expert answer (step 2,
    which carries the identity), or a vanilla answer (the bare instruction)."""
    texts = [str(m.get("content", "")) for m in request.messages if isinstance(m, dict)]
    if any("[Instruction]:" in t for t in texts):
        return "identity"
    if any(IDENTITY in t for t in texts):
        return "expert"
    return "vanilla"


@dataclass
class Upstream:
    fake: FakeOpenAIServer
    stall: float = 0.0  # seconds of silence after the first streamed piece of...
    stall_on: str = "expert"  # ...this kind of request
    refuse: str | None = None  # a kind of request answered with an upstream 400
    break_off: str | None = None  # a kind of request whose stream breaks after its first piece

    def respond(self, request: RecordedRequest) -> Reply:
        kind = kind_of(request)
        if kind == self.refuse:
            error = {
                "message": "The upstream refused this request (scripted).",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
            return Reply(status=400, error_body={"error": error})
        if kind == self.break_off:
            return Reply(body=BROKEN_STREAM)
        content = {"identity": IDENTITY, "expert": EXPERT_ANSWER, "vanilla": VANILLA_ANSWER}[kind]
        stall = self.stall if kind == self.stall_on else 0.0
        return Reply(content=content, usage=dict(USAGE[kind]), stall=stall)

    def kinds(self) -> list[str]:
        return [kind_of(r) for r in self.fake.chat_requests]


# The server app on 127.0.0.1, in a thread


@contextlib.contextmanager
def running_app(
    upstream: FakeOpenAIServer,
    client_keys: list[str] | None = None,
    models: tuple[str, ...] = (UPSTREAM_MODEL,),
) -> Iterator[str]:
    """The real server app in front of ``upstream``; yields its base URL ("http://127.0.0.1:N")."""
    uvicorn = pytest.importorskip("uvicorn")
    from expertprompting.server import ServerSettings, create_app

    settings = ServerSettings(
        models=list(models),
        base_url=upstream.base_url,
        api_key="upstream-key",
        api_keys=client_keys or [],
        cache=False,  # every answer asks the upstream, so each test sees its own requests
        prompter={"retry": RetryPolicy(max_attempts=1)},  # a scripted failure is final
    )
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="playground-app", daemon=True)
    thread.start()
    try:
        # uvicorn sets `started` once it listens (or exits the thread if it could not).
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server app did not start")
            thread.join(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


# The browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with FakeOpenAIServer() as fake:
        scripted = Upstream(fake)
        fake.responder = scripted.respond
        yield scripted


@pytest.fixture
def app_url(upstream: Upstream) -> Iterator[str]:
    with running_app(upstream.fake) as url:
        yield url


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """Open the playground in a fresh browser context; records every URL the page requested
    (``page.requested``) and every script error (``page.errors``), and checks both at the end."""
    contexts: list[BrowserContext] = []
    opened: list[tuple[Page, str, list[str], list[str]]] = []

    def open_(url: str, *, width: int = 1280, **context_options: Any) -> Page:
        context = browser.new_context(viewport={"width": width, "height": 900}, **context_options)
        contexts.append(context)
        page = context.new_page()
        requested: list[str] = []
        errors: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.set_default_timeout(30_000)
        opened.append((page, url, requested, errors))
        page.goto(url + "/")
        return page

    yield open_
    for context in contexts:
        context.close()
    for _page, url, requested, errors in opened:
        assert errors == []
        # Self-contained: the page fetches nothing but its own server's API.
        origin = urlsplit(url).netloc
        assert {urlsplit(u).netloc for u in requested} <= {origin}, requested


def watch_panel(page: Page, testid: str) -> None:
    """Record, in the page, each (identity, answer) state a panel goes through, for
    ``panel_history``: what a user saw, in order, not just the end."""
    page.evaluate(
        """(testid) => {
            window.__history = window.__history || {};
            const history = window.__history[testid] = [];
            const grab = (panel) => {
                const text = (name) => panel.querySelector(`[data-testid="${name}"]`).textContent;
                const box = panel.querySelector('[data-testid="identity-box"]');
                const identity = box.hidden ? null : text("identity");
                history.push({identity, answer: text("answer")});
            };
            new MutationObserver(() => {
                const panel = document.querySelector(`[data-testid="${testid}"]`);
                if (panel) grab(panel);
            }).observe(document.body, {subtree: true, childList: true, characterData: true,
                                       attributes: true});
        }""",
        testid,
    )


def panel_history(page: Page, testid: str) -> list[dict[str, Any]]:
    history: list[dict[str, Any]] = page.evaluate("(testid) => window.__history[testid]", testid)
    return history


def ask(page: Page, instruction: str, strategy: str, *, compare_with: str | None = None) -> None:
    page.get_by_label("Instruction", exact=True).fill(instruction)
    page.get_by_label("Strategy", exact=True).select_option(strategy)
    if compare_with is not None:
        page.get_by_label("Side by side").check()
        page.get_by_label("Compare with").select_option(compare_with)
    page.get_by_role("button", name="Send").click()


def wait_done(page: Page, testid: str) -> dict[str, str]:
    """Wait until a panel's answer finished (or failed); return what it shows."""
    panel = page.get_by_test_id(testid)
    page.wait_for_selector(
        f'[data-testid="{testid}"][data-state="done"], [data-testid="{testid}"][data-state="error"]'
    )
    shown = {"state": panel.get_attribute("data-state") or ""}
    for name in (
        "identity",
        "answer",
        "error",
        "prompt-tokens",
        "completion-tokens",
        "total-tokens",
        "requests",
        "time",
    ):
        shown[name] = panel.get_by_test_id(name).text_content() or ""
    shown["identity_visible"] = str(panel.get_by_test_id("identity-box").is_visible())
    shown["error_visible"] = str(panel.get_by_test_id("error").is_visible())
    return shown


def usage_sum(*kinds: str) -> dict[str, int]:
    keys = ("prompt_tokens", "completion_tokens", "total_tokens")
    return {key: sum(USAGE[kind][key] for kind in kinds) for key in keys}


def assert_figures(shown: dict[str, str], kinds: list[str]) -> None:
    """Token figures and requests on the page are those the upstream returned, summed."""
    expected = usage_sum(*kinds)
    assert shown["prompt-tokens"] == str(expected["prompt_tokens"])
    assert shown["completion-tokens"] == str(expected["completion_tokens"])
    assert shown["total-tokens"] == str(expected["total_tokens"])
    assert shown["requests"] == str(len(kinds))
    assert shown["time"].endswith(" s")  # measured by the page; its value is not checked


# The tests


def test_expert_answer_streams_identity_first_then_answer(
    open_page: Callable[..., Page], app_url: str, upstream: Upstream
) -> None:
    upstream.stall = 1.0  # a pause after the first piece: the page must show it before the rest
    page = open_page(app_url)
    watch_panel(page, "panel-single")
    ask(page, INSTRUCTION, "expert")
    shown = wait_done(page, "panel-single")

    assert shown["state"] == "done"
    assert shown["error_visible"] == "False"
    # What the upstream received: step 1 then step 2, both about the instruction typed.
    assert upstream.kinds() == ["identity", "expert"]
    identity_request, answer_request = upstream.fake.chat_requests
    assert INSTRUCTION in str(identity_request.messages[-1]["content"])
    assert INSTRUCTION in str(answer_request.messages[-1]["content"])
    # What it answered, as the page shows it (the identity's markup is text, not HTML).
    assert shown["identity_visible"] == "True"
    assert shown["identity"] == IDENTITY
    assert page.get_by_test_id("panel-single").locator("b").count() == 0
    assert shown["answer"] == EXPERT_ANSWER
    assert_figures(shown, ["identity", "expert"])

    # Streamed: the identity was on screen before any answer text, and part of the answer was
    # on screen before the rest arrived.
    history = panel_history(page, "panel-single")
    first_identity = next(i for i, h in enumerate(history) if h["identity"])
    assert history[first_identity]["answer"] == ""
    partial = [h["answer"] for h in history if h["answer"] and h["answer"] != EXPERT_ANSWER]
    assert partial, "the answer appeared all at once, not streamed"
    assert all(EXPERT_ANSWER.startswith(text) for text in partial)


def test_side_by_side_shows_both_answers(
    open_page: Callable[..., Page], app_url: str, upstream: Upstream
) -> None:
    page = open_page(app_url)
    ask(page, INSTRUCTION, "expert", compare_with="vanilla")
    left, right = wait_done(page, "panel-left"), wait_done(page, "panel-right")

    assert sorted(upstream.kinds()) == ["expert", "identity", "vanilla"]
    assert page.get_by_test_id("panel-left").get_by_test_id("panel-title").text_content() == (
        "vanilla"
    )
    assert left["state"] == "done"
    assert left["identity_visible"] == "False"
    assert page.get_by_test_id("panel-left").get_by_test_id("no-identity").is_visible()
    assert left["answer"] == VANILLA_ANSWER
    assert_figures(left, ["vanilla"])

    assert right["state"] == "done"
    assert right["identity"] == IDENTITY
    assert right["answer"] == EXPERT_ANSWER
    assert_figures(right, ["identity", "expert"])
    # Side by side at desktop width: the columns share a row.
    left_box = page.get_by_test_id("panel-left").bounding_box()
    right_box = page.get_by_test_id("panel-right").bounding_box()
    assert left_box is not None
    assert right_box is not None
    assert left_box["y"] == right_box["y"]
    assert left_box["x"] + left_box["width"] <= right_box["x"]


def test_phone_width_stacks_columns_without_horizontal_scroll(
    open_page: Callable[..., Page], app_url: str, upstream: Upstream
) -> None:
    page = open_page(app_url, width=375)
    # A long unbroken "word" is the usual way a narrow layout overflows.
    ask(page, INSTRUCTION + " " + "x" * 300, "expert", compare_with="vanilla")
    wait_done(page, "panel-left")
    wait_done(page, "panel-right")

    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    left_box = page.get_by_test_id("panel-left").bounding_box()
    right_box = page.get_by_test_id("panel-right").bounding_box()
    assert left_box is not None
    assert right_box is not None
    assert left_box["y"] + left_box["height"] <= right_box["y"]  # stacked
    assert right_box["x"] + right_box["width"] <= 375


def chat_replies(page: Page) -> list[str]:
    """Start recording the bodies of the page's chat-completions replies, as the server sent
    them (an SSE stream's whole text); read the list once the answers are done."""
    bodies: list[str] = []

    def record(request: Request) -> None:
        response = request.response()
        if response is not None and response.url.endswith("/v1/chat/completions"):
            bodies.append(response.text())

    page.on("requestfinished", record)
    return bodies


def test_error_reply_is_shown(
    open_page: Callable[..., Page], app_url: str, upstream: Upstream
) -> None:
    upstream.refuse = "vanilla"
    page = open_page(app_url)
    with page.expect_response(lambda r: r.url.endswith("/v1/chat/completions")) as replied:
        ask(page, INSTRUCTION, "vanilla")
    shown = wait_done(page, "panel-single")

    assert upstream.kinds() == ["vanilla"]
    reply = replied.value
    assert reply.status >= 400
    message = reply.json()["error"]["message"]
    assert message
    assert shown["state"] == "error"
    assert shown["error_visible"] == "True"
    assert message in shown["error"]
    assert str(reply.status) in shown["error"]
    assert shown["answer"] == ""


def test_error_after_the_stream_began_is_shown(
    open_page: Callable[..., Page], app_url: str, upstream: Upstream
) -> None:
    upstream.break_off = "expert"  # step 2 breaks off after its first piece of text
    page = open_page(app_url)
    bodies = chat_replies(page)
    ask(page, INSTRUCTION, "expert")
    shown = wait_done(page, "panel-single")

    assert upstream.kinds() == ["identity", "expert"]
    # The server began a stream, then sent an error event: the page shows its message after
    # the text that had arrived.
    (body,) = bodies
    events = [line.removeprefix("data: ") for line in body.splitlines() if line.startswith("data:")]
    errors = [json.loads(e)["error"] for e in events if e != "[DONE]" and "error" in json.loads(e)]
    assert len(errors) == 1
    assert events[-1] == "[DONE]"
    assert shown["state"] == "error"
    assert shown["identity"] == IDENTITY
    assert shown["answer"] == PARTIAL
    assert shown["error_visible"] == "True"
    assert errors[0]["message"] in shown["error"]


def test_stop_aborts_the_answer_and_its_upstream_request(
    open_page: Callable[..., Page], app_url: str, upstream: Upstream
) -> None:
    upstream.stall, upstream.stall_on = 60.0, "vanilla"  # the upstream falls silent mid-answer
    page = open_page(app_url)
    ask(page, INSTRUCTION, "vanilla")
    answer = page.get_by_test_id("panel-single").get_by_test_id("answer")
    page.wait_for_function("(el) => el.textContent.length > 0", arg=answer.element_handle())
    page.get_by_role("button", name="Stop").click()
    shown = wait_done(page, "panel-single")

    assert shown["state"] == "error"
    assert shown["error"] == "Stopped."
    assert VANILLA_ANSWER.startswith(shown["answer"])
    assert shown["answer"] != VANILLA_ANSWER
    assert page.get_by_role("button", name="Send").is_enabled()
    # Leaving the stream cancels the upstream request (long before its 60 s silence ends).
    deadline = time.monotonic() + 20
    while upstream.fake.open_connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.fake.open_connections == 0
    assert upstream.kinds() == ["vanilla"]


@pytest.mark.filterwarnings("ignore::expertprompting.UnknownModelWarning")  # acme/tiny-1: expected
def test_pickers_list_every_served_model_and_its_strategies(
    open_page: Callable[..., Page], upstream: Upstream
) -> None:
    # A model name with a "/" in it must not be taken for "<strategy>/<model>".
    with running_app(upstream.fake, models=(UPSTREAM_MODEL, "acme/tiny-1")) as url:
        page = open_page(url)
        models = page.get_by_label("Model", exact=True)
        page.wait_for_function("(el) => el.options.length > 0", arg=models.element_handle())
        options = "(el) => [...el.options].map((o) => o.value)"
        assert models.evaluate(options) == [UPSTREAM_MODEL, "acme/tiny-1"]
        models.select_option("acme/tiny-1")
        strategies = page.get_by_label("Strategy", exact=True).evaluate(options)
        assert strategies == ["expert", "vanilla", "static", "multi-expert"]
        ask(page, INSTRUCTION, "vanilla")
        shown = wait_done(page, "panel-single")

    assert shown["answer"] == VANILLA_ANSWER
    (request,) = upstream.fake.chat_requests
    assert request.json["model"] == "acme/tiny-1"


def test_with_client_keys_the_page_works_through_basic_auth(
    open_page: Callable[..., Page], upstream: Upstream
) -> None:
    with running_app(upstream.fake, client_keys=[CLIENT_KEY]) as url:
        # Without credentials: the Basic challenge that makes a browser ask for them.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url + "/", timeout=10)
        assert refused.value.code == 401
        assert refused.value.headers["WWW-Authenticate"].startswith("Basic ")

        page = open_page(url, http_credentials={"username": "playground", "password": CLIENT_KEY})
        ask(page, INSTRUCTION, "expert")
        shown = wait_done(page, "panel-single")

    assert shown["state"] == "done"
    assert shown["identity"] == IDENTITY
    assert shown["answer"] == EXPERT_ANSWER
    assert_figures(shown, ["identity", "expert"])
    # The upstream got the server's own key, never the client's.
    for request in upstream.fake.chat_requests:
        assert CLIENT_KEY not in request.headers.get("authorization", "")
