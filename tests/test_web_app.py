"""The web app at `/`, in real browsers (Debian's Chromium and Firefox ESR, driven by Playwright)
against real Chatee processes: people chatting in two browser contexts, agents streaming their
replies with the step timeline, approvals, and building an agent. Each browser test runs in
both browsers and also checks that the page asked nothing of any origin but the API's own.
Screenshots (from Chromium) land in docs/screenshots/.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from chatee.devtools.llm_server import LLMServerThread
from tests.support import Stack

REPO = Path(__file__).resolve().parent.parent
STATIC = REPO / "api" / "web" / "static"
SHOTS = REPO / "docs" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
FIREFOX = Path("/usr/bin/firefox-esr")
FIREFOX_BIDI = REPO / "tests" / "firefox_bidi.py"
DEMO_MCP = str(REPO / "chatee" / "devtools" / "mcp_demo.py")
PASSWORD = "correct horse"
WAIT = 20_000  # ms: the longest any single thing may take to show up

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


# -- the source: linted, and the vendored library is exactly the pinned npm package ----------


def test_every_module_parses_and_its_imports_resolve() -> None:
    """`node --check` on each ES module, and every relative import names a file that exports
    what is imported (what a bundler would catch, without one)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    modules = sorted((STATIC / "js").glob("*.js"))
    assert modules
    for module in modules:
        text = module.read_text()
        check = subprocess.run(
            [node, "--input-type=module", "--check"], input=text, capture_output=True, text=True
        )
        assert check.returncode == 0, f"{module.name}: {check.stderr}"
        for names, target in re.findall(r"import\s*\{([^}]*)\}\s*from\s*\"(\.[^\"]+)\"", text):
            path = (module.parent / target).resolve()
            assert path.is_file(), f"{module.name} imports missing {target}"
            exported = set(re.findall(r"export (?:async )?(?:function|const|let|class) (\w+)",
                                      path.read_text()))  # fmt: skip
            exported |= {
                name.split(" as ")[-1].strip()
                for block in re.findall(r"export\s*\{([^}]*)\}", path.read_text())
                for name in block.split(",")
                if name.strip()
            }
            for name in (n.strip() for n in names.split(",") if n.strip()):
                assert name in exported, f"{module.name}: {target} does not export {name}"


def test_the_vendored_library_is_the_pinned_npm_package() -> None:
    """web/vendor.py --check: api/web/static/vendor/ holds exactly the files of the package
    versions web/package-lock.json pins (installed with `npm ci` if they are not yet)."""
    web = REPO / "web"
    if not (web / "node_modules").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed")
        subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=web, check=True
        )
    lock = json.loads((web / "package-lock.json").read_text())
    installed = json.loads((web / "node_modules" / "htm" / "package.json").read_text())
    assert installed["version"] == lock["packages"]["node_modules/htm"]["version"]
    check = subprocess.run(
        [sys.executable, str(web / "vendor.py"), "--check"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr


def test_the_app_is_served_with_a_strict_policy_and_shadows_nothing(stack: Stack) -> None:
    with httpx.Client(base_url=stack.base) as http:
        index = http.get("/")
        assert index.status_code == 200 and "/app/js/main.js" in index.text
        policy = index.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "default-src 'none'" in policy
        assert "unsafe" not in policy and "http" not in policy.replace("ws://", "")
        assert len(index.headers.get_list("content-security-policy")) == 1
        module = http.get("/app/js/main.js")
        assert module.headers["content-type"].startswith("text/javascript")
        assert http.get("/app/vendor/preact-htm.js").status_code == 200
        for missing in ("/app/nope.js", "/app/../__init__.py", "/app/%2e%2e/__init__.py"):
            r = http.get(missing)
            assert r.status_code == 404, missing
            assert r.headers["content-type"] == "application/problem+json"
        assert http.get("/healthz").status_code == 200  # the API's own routes still answer
        assert http.get("/api/v1/agents").status_code == 401
        assert (
            http.get("/api/v1/agents")
            .headers["content-security-policy"]
            .startswith("default-src 'none'")
        )


# -- the browser ------------------------------------------------------------------------------


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module", params=["chromium", "firefox"])
def browser(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """Each browser test runs in Debian's Chromium and in its Firefox ESR. Playwright cannot
    fetch its own patched browsers here; stock Firefox is driven over WebDriver BiDi (channel
    "moz-firefox") through tests/firefox_bidi.py, which stands in for the executable."""
    name = request.param
    with sync_api.sync_playwright() as p:
        if name == "chromium":
            if not CHROMIUM.exists():
                pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
            launched = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        else:
            if not FIREFOX.exists():
                pytest.skip(f"no Firefox at {FIREFOX} (apt-get install firefox-esr)")
            wrapper = tmp_path_factory.mktemp("firefox") / "firefox"
            wrapper.write_text(
                f'#!/bin/sh\nexec "{sys.executable}" "{FIREFOX_BIDI}" "{FIREFOX}" "$@"\n'
            )
            wrapper.chmod(0o755)
            launched = p.firefox.launch(channel="moz-firefox", executable_path=str(wrapper))
        yield launched
        launched.close()


class Person:
    """One person in their own browser context, and every origin their page asked."""

    def __init__(self, browser: Any, stack: Stack) -> None:
        self.base = stack.base
        self.browser_name = browser.browser_type.name
        self.context = browser.new_context(viewport={"width": 1100, "height": 720})
        self.origins: set[str] = set()
        self.context.on("request", lambda r: self.origins.add(origin(r.url)))
        self.context.on("websocket", lambda ws: self.origins.add(origin(ws.url)))
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.username = ""

    def open(self) -> Any:
        self.page.goto(self.base + "/")
        return self.page

    def sign_up(self, username: str | None = None) -> Person:
        self.username = username or f"web-{uuid.uuid4().hex[:10]}"
        page = self.open()
        page.get_by_label("Username").fill(self.username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Create account").click()
        expect(page.get_by_role("button", name="New chat")).to_be_visible(timeout=WAIT)
        return self

    def sign_in(self, username: str) -> Person:
        self.username = username
        page = self.open()
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("button", name="New chat")).to_be_visible(timeout=WAIT)
        return self

    def messages(self) -> Any:
        """The list items of the `Messages` list itself (a reply's step timeline nests more)."""
        return self.page.get_by_role("list", name="Messages").locator(":scope > li")

    def send(self, text: str) -> None:
        self.page.get_by_role("textbox", name="Message").fill(text)
        self.page.get_by_role("button", name="Send", exact=True).click()

    def shot(self, name: str) -> None:
        """Screenshots for the docs come from Chromium alone, so each run leaves one set."""
        if self.browser_name != "chromium":
            return
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"))

    def close(self, local: str) -> None:
        foreign = {o for o in self.origins if o not in (local, local.replace("http", "ws", 1))}
        self.context.close()
        assert not foreign, f"the page reached outside the API: {foreign}"
        assert not self.errors, self.errors


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else parts.scheme


@pytest.fixture
def people(browser: Any, stack: Stack) -> Iterator[Callable[[], Person]]:
    opened: list[Person] = []

    def new() -> Person:
        opened.append(Person(browser, stack))
        return opened[-1]

    yield new
    for person in opened:
        person.close(stack.base)


class Client:
    """The API as a test sets things up through it (sync: Playwright's sync API owns the
    test's thread)."""

    def __init__(self, stack: Stack, username: str | None = None, register: bool = True) -> None:
        self.http = httpx.Client(base_url=stack.base + "/api/v1", timeout=30)
        self.username = username or f"api-{uuid.uuid4().hex[:10]}"
        path = "/auth/register" if register else "/auth/login"
        r = self.http.post(path, json={"username": self.username, "password": PASSWORD})
        assert r.status_code in (200, 201), r.text
        self.user_id = r.json()["user_id"]
        self.http.headers["Authorization"] = f"Bearer {r.json()['token']}"

    def call(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        r = self.http.request(method, path, **kwargs)
        assert r.status_code == status, r.text
        return r.json() if r.content else None


# -- people chatting --------------------------------------------------------------------------


def test_two_people_chat_live_with_typing_read_markers_and_catch_up(
    people: Callable[[], Person], stack: Stack
) -> None:
    alice = people()
    page = alice.open()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible(timeout=WAIT)
    alice.shot("sign-in")
    alice.sign_up()
    bob_api = Client(stack)
    bob = people().sign_in(bob_api.username)

    # alice finds bob by name and opens a private chat
    page.get_by_role("button", name="New chat").click()
    page.get_by_role("searchbox", name="Find people").fill(bob_api.username[:8])
    alice.shot("find-people")
    page.get_by_role("button", name=bob_api.username).click()
    expect(page.get_by_role("heading", name=bob_api.username)).to_be_visible(timeout=WAIT)
    expect(page.locator(".presence")).to_have_text("online", timeout=WAIT)  # bob is signed in
    alice.send("hello bob")
    expect(alice.messages().filter(has_text="hello bob")).to_have_count(1, timeout=WAIT)

    # bob sees it arrive without a reload, with an unread count, and opens it
    chat = bob.page.get_by_role("link", name=re.compile(alice.username))
    expect(chat.get_by_label("1 unread")).to_be_visible(timeout=WAIT)
    chat.click()
    received = bob.messages().filter(has_text="hello bob")
    expect(received).to_have_count(1, timeout=WAIT)
    expect(received).to_contain_text(alice.username)  # the sender's name
    expect(received.locator("time")).to_have_count(1)
    expect(chat.get_by_label("1 unread")).to_have_count(0, timeout=WAIT)  # read marker moved

    # typing shows on the other side; the reply arrives live
    bob.page.get_by_role("textbox", name="Message").press_sequentially("hi al", delay=30)
    expect(page.get_by_text(f"{bob_api.username} is typing…")).to_be_visible(timeout=WAIT)
    bob.send("hi alice")
    expect(alice.messages().filter(has_text="hi alice")).to_have_count(1, timeout=WAIT)
    expect(page.get_by_text("is typing…")).to_have_count(0, timeout=WAIT)
    alice.shot("conversation")

    # the read markers are stored: nothing unread for either of them
    conversation = next(c for c in bob_api.call("GET", "/conversations") if c["type"] == "private")
    assert conversation["unread"] == 0

    # the laptop sleeps: the socket goes, messages arrive meanwhile, then it wakes and catches up
    alice.context.set_offline(True)
    expect(page.get_by_role("status").filter(has_text="offline")).to_be_visible(timeout=WAIT)
    for n in range(3):
        bob_api.call(
            "POST",
            f"/conversations/{conversation['id']}/messages",
            201,
            json={"content": f"while you were away {n}", "client_msg_id": f"away-{n}"},
        )
    alice.context.set_offline(False)
    expect(page.get_by_role("status").filter(has_text="online")).to_be_visible(timeout=WAIT)
    for n in range(3):
        expect(alice.messages().filter(has_text=f"while you were away {n}")).to_have_count(
            1, timeout=WAIT
        )
    expect(alice.messages()).to_have_count(5)  # no duplicates, no gaps

    # still signed in after a reload (the tokens are kept and refreshed); then signed out
    bob.page.reload()
    expect(bob.messages().filter(has_text="while you were away 2")).to_have_count(1, timeout=WAIT)
    bob.page.get_by_role("button", name="Sign out").click()
    expect(bob.page.get_by_role("button", name="Sign in")).to_be_visible(timeout=WAIT)
    bob.page.reload()
    expect(bob.page.get_by_role("button", name="Sign in")).to_be_visible(timeout=WAIT)


def test_edits_deletions_and_reactions_reach_the_other_person_live(
    people: Callable[[], Person], stack: Stack
) -> None:
    erin, frank = Client(stack), Client(stack)
    conversation = erin.call(
        "POST", "/conversations", 201, json={"type": "private", "members": [frank.user_id]}
    )
    path = f"/conversations/{conversation['id']}/messages"
    erin.call("POST", path, 201, json={"content": "see you at 5", "client_msg_id": "m1"})
    writer, reader = people().sign_in(erin.username), people().sign_in(frank.username)
    for person, other in ((writer, frank), (reader, erin)):
        person.page.get_by_role("link", name=re.compile(other.username)).click()
        expect(person.messages().filter(has_text="see you at 5")).to_have_count(1, timeout=WAIT)

    # the sender edits their message; the other side sees the new text, marked edited
    mine = writer.messages().filter(has_text="see you at 5")
    mine.get_by_role("button", name="Edit message").click()
    writer.page.get_by_role("textbox", name="Edit message").fill("see you at 6")
    writer.page.get_by_role("button", name="Save").click()
    theirs = reader.messages().first
    expect(theirs).to_contain_text("see you at 6", timeout=WAIT)
    expect(theirs).to_contain_text("(edited)")
    expect(reader.messages().first.get_by_role("button", name="Edit message")).to_have_count(0)

    # the other person reacts; the sender sees the count
    theirs.get_by_role("button", name="React with 👍").click()
    expect(theirs.get_by_role("button", name="👍 1")).to_have_attribute("aria-pressed", "true")
    mine = writer.messages().first
    expect(mine.get_by_role("button", name="👍 1")).to_have_attribute(
        "aria-pressed", "false", timeout=WAIT
    )

    # the sender deletes it: a tombstone in its place on both sides
    mine.get_by_role("button", name="Delete message").click()
    expect(reader.messages().first).to_contain_text("This message was deleted.", timeout=WAIT)
    expect(reader.messages().first).not_to_contain_text("see you at")
    [stored] = erin.call("GET", path)["items"]
    assert stored["deleted"] and stored["content"] == ""


def test_a_group_is_created_with_members_and_a_thread(
    people: Callable[[], Person], stack: Stack
) -> None:
    gina, hal = Client(stack), Client(stack)
    owner = people().sign_in(gina.username)
    member = people().sign_in(hal.username)
    page = owner.page
    page.get_by_role("button", name="New group").click()
    dialog = page.get_by_role("dialog", name="New group")
    dialog.get_by_label("Group name").fill("Launch team")
    dialog.get_by_role("searchbox", name="Find people").fill(hal.username)
    dialog.get_by_role("button", name=hal.username).click()
    expect(dialog).to_contain_text(f"Members: {hal.username}")
    dialog.get_by_role("button", name="Create group").click()
    expect(page.get_by_role("heading", name="Launch team")).to_be_visible(timeout=WAIT)
    owner.send("welcome aboard")

    # the new member finds the group in their list, live, with the message unread
    group = member.page.get_by_role("link", name=re.compile("Launch team"))
    expect(group.get_by_label("1 unread")).to_be_visible(timeout=WAIT)
    group.click()
    expect(member.messages().filter(has_text="welcome aboard")).to_contain_text(gina.username)

    # members panel, then a thread under the group
    page.get_by_role("button", name="Members").click()
    members = page.get_by_role("dialog", name="Members")
    expect(members).to_contain_text(hal.username, timeout=WAIT)
    expect(members.get_by_role("button", name=f"Remove {hal.username}")).to_be_visible()
    owner.shot("group-members")
    members.get_by_role("button", name="Close").click()
    page.get_by_role("button", name="New thread").click()
    page.get_by_label("Thread title").fill("Release notes")
    page.get_by_role("button", name="Open thread").click()
    expect(page.get_by_role("heading", name="# Release notes")).to_be_visible(timeout=WAIT)
    owner.send("draft is up")
    thread = member.page.get_by_role("link", name=re.compile("Release notes"))
    expect(thread.get_by_label("1 unread")).to_be_visible(timeout=WAIT)


def test_an_expired_access_token_is_refreshed_and_the_person_stays_signed_in(
    people: Callable[[], Person], stack: Stack
) -> None:
    ivy = Client(stack)
    person = people().sign_in(ivy.username)
    page = person.page
    before = page.evaluate("JSON.parse(localStorage.getItem('chatee.auth'))")
    # as if the tab slept past the access token's lifetime: the token is made stale as the
    # page loads again (not under the running page, which would refresh it itself)
    person.context.add_init_script(
        """(() => {
        const a = JSON.parse(localStorage.getItem('chatee.auth') || 'null');
        if (a && !sessionStorage.getItem('made-stale')) {
            a.expires_at = Date.now() - 1000;
            localStorage.setItem('chatee.auth', JSON.stringify(a));
            sessionStorage.setItem('made-stale', '1');
        }
    })()"""
    )
    page.reload()
    expect(page.get_by_role("status").filter(has_text="online")).to_be_visible(timeout=WAIT)
    expect(page.get_by_role("button", name="Sign in")).to_have_count(0)
    after = page.evaluate("JSON.parse(localStorage.getItem('chatee.auth'))")
    assert after["refresh_token"] != before["refresh_token"]  # the old one was spent
    assert after["expires_at"] > before["expires_at"] - 5000
    r = httpx.post(
        stack.base + "/api/v1/auth/refresh", json={"refresh_token": before["refresh_token"]}
    )
    assert r.status_code == 401  # a refresh token works once


def test_history_scrolls_back_to_the_first_message(
    people: Callable[[], Person], stack: Stack
) -> None:
    carol = Client(stack)
    dave = Client(stack)
    conversation = carol.call(
        "POST", "/conversations", 201, json={"type": "private", "members": [dave.user_id]}
    )
    for n in range(1, 81):
        carol.call(
            "POST",
            f"/conversations/{conversation['id']}/messages",
            201,
            json={"content": f"history {n:02d}", "client_msg_id": f"h-{n}"},
        )
    reader = people().sign_in(dave.username)
    reader.page.get_by_role("link", name=re.compile(carol.username)).click()
    items = reader.messages()
    expect(items.last).to_contain_text("history 80", timeout=WAIT)
    assert items.count() < 80  # only the newest page so far
    first = items.filter(has_text="history 01")
    scroller = reader.page.locator(".scroller")
    for _ in range(10):
        if first.count():
            break
        scroller.evaluate("el => { el.scrollTop = 0; }")
        reader.page.wait_for_timeout(300)
    expect(first).to_have_count(1, timeout=WAIT)
    expect(items).to_have_count(80)
    texts = items.all_inner_texts()
    assert [int(re.search(r"history (\d+)", t).group(1)) for t in texts] == list(range(1, 81))
    expect(reader.page.get_by_text("The beginning of this conversation.")).to_be_visible()


# -- agents -----------------------------------------------------------------------------------


def test_an_agent_mentioned_in_a_group_streams_its_reply_in_place(
    people: Callable[[], Person], stack: Stack, llm: LLMServerThread
) -> None:
    owner = Client(stack)
    agent = owner.call("POST", "/agents", 201, json={"name": f"scribe-{uuid.uuid4().hex[:6]}"})
    group = owner.call(
        "POST",
        "/conversations",
        201,
        json={"type": "group", "title": "Writers room", "members": [agent["id"]]},
    )
    marker = uuid.uuid4().hex
    chunks = ["Once ", "upon ", "a ", "time, ", "the end."]
    llm.llm.script(marker, [{"chunks": chunks, "chunk_delay_ms": 400}])
    person = people().sign_in(owner.username)
    page = person.page
    page.get_by_role("link", name=re.compile("Writers room")).click()
    expect(page.get_by_role("heading", name="Writers room")).to_be_visible(timeout=WAIT)
    page.evaluate(
        """() => {
        window.__streamed = [];
        const list = document.querySelector('[aria-label="Messages"]');
        new MutationObserver(() => {
            const text = list.querySelector('li.streaming .text');
            if (text) window.__streamed.push(text.textContent);
        }).observe(list, {subtree: true, childList: true, characterData: true});
    }"""
    )
    person.send(f"@{agent['name']} tell a story {marker}")

    reply = person.messages().filter(has_text="the end.")
    expect(reply).to_contain_text(agent["name"], timeout=WAIT)
    expect(reply).to_have_attribute("aria-busy", "false", timeout=WAIT)
    streamed = page.evaluate("window.__streamed")
    assert any(t.startswith("Once ") and "the end." not in t for t in streamed), streamed
    # one message in the history, with the whole reply
    history = owner.call("GET", f"/conversations/{group['id']}/messages")["items"]
    assert [m["content"] for m in history if m["sender_type"] == "agent"] == ["".join(chunks)]
    person.shot("group-agent-reply")


def watch_reply(page: Any) -> None:
    """Record every text the newest agent reply shows, to prove it grew token by token."""
    page.evaluate(
        """() => {
        window.__seen = [];
        const list = document.querySelector('[aria-label="Messages"]');
        new MutationObserver(() => {
            const text = list.querySelector('li.agent:last-child .text');
            if (text) window.__seen.push(text.textContent);
        }).observe(list, {subtree: true, childList: true, characterData: true});
    }"""
    )


def start_agent_chat(person: Person, agent_name: str) -> Any:
    page = person.page
    page.get_by_role("button", name="New agent chat").click()
    page.get_by_role("button", name=agent_name, exact=True).click()
    expect(page.get_by_role("heading", name=agent_name)).to_be_visible(timeout=WAIT)
    return page


def test_an_agent_reply_streams_with_its_steps_and_a_tool_approved_in_the_ui(
    people: Callable[[], Person], stack: Stack, llm: LLMServerThread
) -> None:
    from chatee.mcp import tool_name

    owner = Client(stack)
    server = owner.call(
        "POST",
        "/mcp/servers",
        201,
        json={"name": f"calc-{uuid.uuid4().hex[:6]}", "transport": "stdio",
              "command": sys.executable, "args": [DEMO_MCP]},
    )  # fmt: skip
    owner.call("POST", f"/mcp/servers/{server['id']}/connect")
    add = tool_name(server["name"], "add")
    agent = owner.call(
        "POST",
        "/agents",
        201,
        json={"name": f"calculator-{uuid.uuid4().hex[:6]}", "model": "scripted",
              "mcp_servers": [server["id"]], "tool_policy": {add: "approve"}},
    )  # fmt: skip
    marker = uuid.uuid4().hex
    llm.llm.script(
        marker,
        [
            {"tool_calls": [{"id": "call_1", "name": add, "arguments": {"a": 2, "b": 3}}]},
        ],
    )
    # after the approval, the newest user message the model sees is the UI's answer, "yes"
    llm.llm.script("yes", [{"chunks": ["The ", "sum ", "of 2 and 3 ", "is 5."],
                            "chunk_delay_ms": 250}])  # fmt: skip
    person = people().sign_in(owner.username)
    page = start_agent_chat(person, agent["name"])
    watch_reply(page)
    person.send(f"add 2 and 3 {marker}")

    # the tool needs approval: the card shows, and Approve answers it
    card = page.get_by_role("group", name="Approval needed")
    expect(card).to_contain_text(add, timeout=WAIT)
    person.shot("agent-approval")
    card.get_by_role("button", name="Approve").click()

    reply = person.messages().last
    expect(reply).to_contain_text("The sum of 2 and 3 is 5.", timeout=WAIT)
    expect(reply).to_contain_text("completed", timeout=WAIT)
    expect(card).to_have_count(0)
    seen = page.evaluate("window.__seen")
    assert any(t.startswith("The ") and "is 5." not in t for t in seen), seen  # it streamed

    # the timeline: each step, and the tool call with its arguments and result
    steps = reply.get_by_role("list", name="Steps").get_by_role("listitem")
    actions = " ".join(steps.all_inner_texts())
    for action in ("AG_SELF_GEN", "AG_CALL_HUMAN", "AG_USE_MCP"):
        assert action in actions, actions
    tool = reply.locator(".tool")
    expect(tool).to_contain_text(add)
    expect(tool.get_by_label("Arguments")).to_contain_text('"a": 2')
    expect(tool.get_by_label("Result")).to_contain_text("5")
    link = reply.get_by_role("link", name="Workflow in Temporal UI")
    session = owner.call("GET", "/sessions")[0]
    assert session["workflow_id"] in (link.get_attribute("href") or "")
    person.shot("agent-chat")


def test_an_agent_asks_a_human_and_the_answer_box_replies(
    people: Callable[[], Person], stack: Stack, llm: LLMServerThread
) -> None:
    owner = Client(stack)
    agent = owner.call(
        "POST",
        "/agents",
        201,
        json={"name": f"asker-{uuid.uuid4().hex[:6]}", "model": "scripted",
              "chain": [{"type": "AG_CALL_HUMAN", "prompt": "Which city?"}, "AG_SELF_GEN"]},
    )  # fmt: skip
    marker = uuid.uuid4().hex
    llm.llm.script(marker, ["Paris it is."])
    person = people().sign_in(owner.username)
    page = start_agent_chat(person, agent["name"])
    person.send("plan a trip")
    ask = page.get_by_role("form", name="The agent asks you")
    expect(ask).to_contain_text("Which city?", timeout=WAIT)
    ask.get_by_role("textbox", name="Answer").fill(f"Paris {marker}")
    ask.get_by_role("button", name="Send answer").click()
    expect(person.messages().last).to_contain_text("Paris it is.", timeout=WAIT)
    expect(ask).to_have_count(0)


def test_an_agent_built_in_the_ui_shows_the_chain_error_inline(
    people: Callable[[], Person], stack: Stack
) -> None:
    owner = Client(stack)
    person = people().sign_in(owner.username)
    page = person.page
    page.get_by_text("Agents (0)").click()
    page.get_by_role("link", name="Create agent").click()
    name = f"built-{uuid.uuid4().hex[:6]}"
    page.get_by_label("Name").fill(name)
    page.get_by_label("Model").fill("scripted")
    page.get_by_label("System prompt").fill("You are terse.")
    chain = page.get_by_label("Chain template")
    chain.fill('["AG_SELF_GEN", "AG_TELEPORT"]')
    page.get_by_role("button", name="Create agent").click()
    error = page.locator("#chain-error")
    expect(error).to_contain_text("AG_TELEPORT", timeout=WAIT)
    expect(chain).to_have_attribute("aria-invalid", "true")
    person.shot("agent-editor-error")
    assert owner.call("GET", "/agents") == []  # nothing stored

    chain.fill('["AG_SELF_GEN"]')
    page.get_by_label("Double texting").select_option("interrupt")
    page.get_by_role("button", name="Create agent").click()
    expect(page.get_by_role("status").filter(has_text="Saved.")).to_be_visible(timeout=WAIT)
    expect(error).to_have_count(0)
    [agent] = owner.call("GET", "/agents")
    assert (agent["name"], agent["chain"], agent["double_texting"]) == (
        name,
        ["AG_SELF_GEN"],
        "interrupt",
    )
    assert agent["system_prompt"] == "You are terse."

    # a knowledge base for it, with a document uploaded and ingested
    page.get_by_label("New knowledge base").fill("Handbook")
    page.get_by_role("button", name="Add knowledge base").click()
    page.get_by_label("Upload a document to Handbook").set_input_files(
        files=[{"name": "handbook.txt", "mimeType": "text/plain",
                "buffer": b"Refunds are paid within 14 days of a return."}]
    )  # fmt: skip
    documents = page.get_by_role("list", name="Documents in Handbook")
    expect(documents).to_contain_text("handbook.txt — ready", timeout=WAIT)
    page.get_by_role("button", name="Save agent").click()
    expect(page.get_by_role("status").filter(has_text="Saved.")).to_be_visible(timeout=WAIT)
    [kb] = owner.call("GET", "/knowledge-bases")
    links = owner.call("GET", f"/agents/{agent['id']}/knowledge-bases")
    assert links["knowledge_base_ids"] == [kb["id"]]
    person.shot("agent-editor")


def test_a_running_turn_is_cancelled_from_the_ui(
    people: Callable[[], Person], stack: Stack, llm: LLMServerThread
) -> None:
    owner = Client(stack)
    agent = owner.call(
        "POST", "/agents", 201, json={"name": f"slow-{uuid.uuid4().hex[:6]}", "model": "scripted"}
    )
    marker = uuid.uuid4().hex
    llm.llm.script(marker, [{"chunks": ["still ", "going "] * 50, "chunk_delay_ms": 200}])
    person = people().sign_in(owner.username)
    start_agent_chat(person, agent["name"])
    person.send(f"talk for a while {marker}")
    reply = person.messages().last
    expect(reply).to_contain_text("still going", timeout=WAIT)
    reply.get_by_role("button", name="Cancel turn").click()
    expect(reply.get_by_text(re.compile("^Cancelled"))).to_be_visible(timeout=WAIT)
    expect(reply.get_by_role("button", name="Cancel turn")).to_have_count(0)
