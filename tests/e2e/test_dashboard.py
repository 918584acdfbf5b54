"""The dashboard in real headless Chromium against `modelserve up`, as a person uses it.

Debian's chromium, driven by Playwright with its executable path set (never a
browser download). Screenshots of every page land in build/screenshots/ (or
MODELSERVE_SCREENSHOT_DIR), with real data from the embedded stack.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright

from modelserve.shared.net import free_port
from support.services import unavailable
from support.stack import Up, stack

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
LAPTOP: ViewportSize = {"width": 1366, "height": 860}
PHONE: ViewportSize = {"width": 390, "height": 844}
RECORD_ANSWER_LENGTHS = """() => {
  window.answerLengths = [];
  new MutationObserver(() => {
    const answers = document.querySelectorAll(".message-assistant p");
    if (answers.length) window.answerLengths.push(answers[answers.length - 1].textContent.length);
  }).observe(document.querySelector(".messages"), {
    childList: true, subtree: true, characterData: true,
  });
}"""
RECORD_FIGURES = """(server) => {
  const row = document.querySelector(`tr[data-server='${server}']`);
  const cells = () => ["Memory", "CPU"]
    .map((label) => row.querySelector(`td[data-label='${label}']`).textContent).join(" | ");
  window.figures = [cells()];
  new MutationObserver(() => window.figures.push(cells())).observe(row, {
    childList: true, subtree: true, characterData: true,
  });
}"""


def keep_busy(up: Up, server: str, seconds: float) -> None:
    """Completions through the gateway for a while, so the runtime's CPU moves."""
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=60) as http:
        while time.monotonic() < deadline:
            http.post(
                f"{up.url}/{server}/v1/completions",
                headers={"Authorization": f"Bearer {up.token}"},
                json={"model": "demo", "prompt": "Hello", "max_tokens": 64},
            )


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = os.environ.get("MODELSERVE_CHROMIUM") or shutil.which("chromium")
    if executable is None:
        unavailable("no chromium: apt-get install chromium (.ci/run does)")
    if not (REPO / "dashboard" / "dist" / "index.html").is_file():
        unavailable("the dashboard is not built: make install builds dashboard/dist")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots() -> Path:
    folder = Path(os.environ.get("MODELSERVE_SCREENSHOT_DIR", REPO / "build" / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    with stack(tmp_path / "data", free_port()) as running:
        yield running


def snap(page: Page, shots: Path, name: str) -> None:
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


def sign_in(page: Page, up: Up) -> None:
    assert up.admin_password, "the first start prints the generated admin password"
    page.goto(up.url + "/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(up.admin_password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()


def test_sign_in_serve_watch_chat_delete(browser: Browser, up: Up, shots: Path) -> None:
    context = browser.new_context(viewport=LAPTOP)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # Sign in: a wrong password is refused, the right one gets in.
    page.goto(up.url + "/")
    expect(page.get_by_role("form", name="Sign in")).to_be_visible()
    snap(page, shots, "01-sign-in")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    sign_in(page, up)
    expect(page.get_by_text("No servers yet")).to_be_visible()
    expect(page.get_by_text("live", exact=True)).to_be_visible()
    snap(page, shots, "02-servers-empty")

    # A request that breaks the contract: every reason next to its field.
    page.get_by_role("link", name="Serve", exact=True).click()
    form = page.get_by_role("form", name="Serve a model")
    expect(form.get_by_label("Model")).to_have_value("demo")
    form.get_by_label("Replicas", exact=True).fill("10")
    form.get_by_label("CPU per replica").fill("16")
    form.get_by_role("button", name="Serve").click()
    replicas = page.locator(".field", has=page.get_by_label("Replicas", exact=True))
    expect(replicas.get_by_role("alert")).to_contain_text("10 replicas requested; the limit is 4")
    cpu = page.locator(".field", has=page.get_by_label("CPU per replica"))
    expect(cpu.get_by_role("alert")).to_contain_text("16 cores per replica requested")
    snap(page, shots, "03-serve-contract-violations")

    # Serve the demo model and watch it reach ready, live.
    form.get_by_label("Replicas", exact=True).fill("1")
    form.get_by_label("CPU per replica").fill("1")
    form.get_by_label("Context (n_ctx)").fill("512")
    form.get_by_role("button", name="Serve").click()
    progress = page.locator(".serve-progress")
    expect(progress).to_have_attribute("data-status", "ready", timeout=120_000)
    seen = progress.locator(".steps li.done").all_inner_texts()
    assert seen[:3] == ["requested", "checking", "mirroring"], seen
    server = progress.locator("a.mono").inner_text()
    assert re.fullmatch(r"[0-9a-f-]{36}", server), server
    snap(page, shots, "04-serve-ready")

    # The servers table: live status, ids, times, memory, CPU, gateway URL.
    page.get_by_role("link", name="Servers", exact=True).click()
    row = page.locator(f"tr[data-server='{server}']")
    expect(row.locator("[data-status]")).to_have_text("ready")
    expect(row.get_by_role("link", name=f"{up.url}/{server}")).to_be_visible()
    expect(row.locator("td[data-label='Memory']")).to_contain_text(re.compile(r"\d+ MB / \d+ MB"))
    expect(row.locator("td[data-label='Model UUID']")).not_to_have_text("\N{EN DASH}")
    snap(page, shots, "05-servers")

    # Live figures: memory and CPU move on the page while the server works.
    page.evaluate(RECORD_FIGURES, server)
    busy = threading.Thread(target=keep_busy, args=(up, server, 8.0))
    busy.start()
    try:
        page.wait_for_function("() => new Set(window.figures).size >= 3", timeout=45_000)
    finally:
        busy.join()

    # One server: its gateway URL and snippets.
    row.click()
    expect(page.get_by_role("heading", name=re.compile("demo"))).to_be_visible()
    expect(page.locator("a.gateway-link")).to_have_text(f"{up.url}/{server}")
    expect(page.get_by_text(f'base_url="{up.url}/{server}/v1"')).to_be_visible()
    snap(page, shots, "06-server-detail")

    # Chat: the answer streams in, token by token (every text change is recorded).
    page.get_by_role("link", name="Chat", exact=True).click()
    page.get_by_label("Max tokens").fill("200")
    page.evaluate(RECORD_ANSWER_LENGTHS)
    # The demo model writes 200 tokens in well under a second: a browser starved of CPU
    # may read them in one go. A page that does not stream fails every try.
    tries: list[list[int]] = []
    for attempt in range(3):
        if attempt:
            page.get_by_role("button", name="Clear").click()
            page.evaluate("window.answerLengths = []")
        page.get_by_label("Message text").fill("Hello")
        page.get_by_role("button", name="Send").click()
        expect(page.get_by_role("button", name="Send")).to_be_visible(timeout=60_000)
        final = page.locator(".message-assistant p").last.inner_text()
        assert final and final != "\N{HORIZONTAL ELLIPSIS}"
        tries.append(page.evaluate("window.answerLengths"))
        if len({n for n in tries[-1] if 1 < n < len(final)}) >= 2:
            break
    else:
        raise AssertionError(f"the answer arrived in one piece every time: {tries}")
    snap(page, shots, "07-chat")

    # Models: the mirrored demo model with its GGUF facts.
    page.get_by_role("link", name="Models", exact=True).click()
    model = page.locator("tr[data-model='demo']")
    expect(model.locator("td[data-label='Architecture']")).to_have_text("llama")
    expect(model.locator("td[data-label='SHA-256']")).to_have_text(re.compile(r"^[0-9a-f]{64}$"))
    snap(page, shots, "08-models")

    # Phone width: the same pages still work.
    page.set_viewport_size(PHONE)
    page.get_by_role("link", name="Servers", exact=True).click()
    expect(page.locator(f"tr[data-server='{server}']")).to_be_visible()
    snap(page, shots, "09-servers-phone")
    page.goto(f"{up.url}/#/servers/{server}/chat")
    expect(page.get_by_label("Message text")).to_be_visible()
    snap(page, shots, "10-chat-phone")
    page.set_viewport_size(LAPTOP)

    # Delete it: the status follows, and the endpoint stops answering.
    page.goto(f"{up.url}/#/servers/{server}")
    page.get_by_role("button", name="Stop and delete").click()
    page.get_by_role("button", name="Delete", exact=True).click()
    expect(page.locator("h2 [data-status]")).to_have_text(
        re.compile("deleting|deleted"), timeout=30_000
    )
    expect(page.locator("h2 [data-status]")).to_have_text("deleted", timeout=60_000)
    snap(page, shots, "11-deleted")
    gone = page.request.get(
        f"{up.url}/{server}/v1/models", headers={"Authorization": f"Bearer {up.token}"}
    )
    assert gone.status == 410

    # Sign out: back to the form, and the token is gone from the tab.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("Signed out.")).to_be_visible()
    assert page.evaluate("window.sessionStorage.length") == 0
    assert errors == [], errors
    context.close()


def serve_ready(up: Up) -> str:
    """The demo model served through the API (the UI's serve form is tested above)."""
    auth = {"Authorization": f"Bearer {up.token}"}
    with httpx.Client(base_url=up.url, headers=auth, timeout=30) as http:
        accepted = http.post("/serve", json={"model": "demo", "runtime_params": {"n_ctx": 512}})
        server: str = accepted.json()["server_uuid"]
        deadline = time.monotonic() + 120
        while http.get(f"/servers/{server}").json()["status"] != "ready":
            assert time.monotonic() < deadline, "the demo server did not get ready"
            time.sleep(0.2)
    return server


def test_a_key_from_the_server_page(browser: Browser, up: Up, shots: Path) -> None:
    server = serve_ready(up)
    page = browser.new_context(viewport=LAPTOP).new_page()
    sign_in(page, up)
    page.goto(f"{up.url}/#/servers/{server}")
    expect(page.get_by_text("No keys for this server yet.")).to_be_visible()
    page.get_by_label("Name", exact=True).fill("e2e front end")
    page.get_by_role("button", name="Create key").click()
    dialog = page.get_by_role("dialog", name="New API key")
    expect(dialog).to_contain_text("shown only once")
    key = dialog.locator("code").inner_text()
    assert re.fullmatch(r"msk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", key), key
    snap(page, shots, "11-new-key")
    dialog.get_by_role("button", name="I have stored it").click()
    expect(dialog).to_be_hidden()
    assert key not in page.content()  # shown once: gone from the page
    key_id = key.split("_")[1]
    expect(page.get_by_role("table", name="API keys")).to_contain_text(key_id)

    # The key works through the gateway, and its tokens are counted.
    with httpx.Client(base_url=up.url, timeout=60) as http:
        answer = http.post(
            f"/{server}/v1/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "demo", "prompt": "Hello", "max_tokens": 5},
        )
        assert answer.status_code == 200, answer.text
        admin = {"Authorization": f"Bearer {up.token}"}
        deadline = time.monotonic() + 15
        while http.get("/usage", params={"key_id": key_id}, headers=admin).json()["requests"] < 1:
            assert time.monotonic() < deadline, "the key's usage was never written"
            time.sleep(0.2)
        usage = page.get_by_role("heading", name="Usage, last hour")
        usage.get_by_role("button", name="Refresh").click()  # the log panel has one too
        expect(page.get_by_role("table", name="Usage per key")).to_contain_text(key_id)
        expect(page.get_by_role("img", name="Tokens per minute").locator("rect")).to_have_count(1)

        page.get_by_role("button", name="Revoke e2e front end").click()
        expect(page.get_by_role("table", name="API keys")).to_contain_text("revoked")
        snap(page, shots, "12-key-revoked")
        refused = http.post(
            f"/{server}/v1/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "demo", "prompt": "Hello", "max_tokens": 5},
        )
        assert refused.status_code == 401


def test_a_server_s_charts_move_under_traffic(browser: Browser, up: Up, shots: Path) -> None:
    server = serve_ready(up)
    busy = threading.Thread(target=keep_busy, args=(up, server, 60), daemon=True)
    busy.start()
    page = browser.new_context(viewport=LAPTOP).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, up)
    page.goto(f"{up.url}/#/servers/{server}")
    tokens = page.locator("figure[data-chart='tokens_per_second']")
    expect(tokens.locator("canvas").first).to_be_visible(timeout=60_000)

    def points() -> int:
        return int(tokens.get_attribute("data-points") or 0)

    first = points()
    deadline = time.monotonic() + 45
    while points() < max(first + 1, 5):  # a new sample every 5 s: the chart moves
        assert time.monotonic() < deadline, f"the chart went from {first} to {points()} points"
        page.wait_for_timeout(500)
    # Under traffic the latest rate is above zero, and the latency charts have values.
    expect(tokens.locator("figcaption")).to_contain_text(re.compile(r"· [1-9][0-9.]* tokens/s"))
    expect(page.locator("figure[data-chart='ttft_p50_seconds'] figcaption")).to_contain_text("ms")
    snap(page, shots, "12-server-charts")
    # An admin reads the runtime's own output on the same page: the traffic is in it.
    page.get_by_role("heading", name="Runtime log").get_by_role("button", name="Refresh").click()
    expect(page.get_by_label("Runtime log")).to_contain_text("POST /v1/completions")

    page.goto(f"{up.url}/#/servers")
    spark = page.locator(f"tr[data-server='{server}'] svg.sparkline")
    expect(spark).to_be_visible(timeout=20_000)
    assert int(spark.get_attribute("data-points") or 0) >= 2
    snap(page, shots, "13-servers-sparklines")
    busy.join(90)
    assert errors == [], errors
