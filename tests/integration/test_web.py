"""The web dashboard in a real browser (the machine's Chromium driven by Playwright) against a real
daemon with real instances: log in, create from the form and see it run, live state from the event
stream, console (type `hostname`, read the answer; resize), bookmarks, graphs from the samples,
stop and destroy; another user sees nothing of it; the admin's node page."""
from __future__ import annotations

import http.server
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from daemon import Daemon

playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
T = 60_000      # ms: creating and starting an instance on a busy machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def web(template_dir, minimal):
    """A daemon listening on loopback TCP, sampling every second; alice and bob have passwords."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup-host.sh --test installs the Debian package chromium")
    port = free_port()
    d = Daemon(template_dir, env={"OPENVPS_LISTEN": f"127.0.0.1:{port}", "OPENVPS_SAMPLE_INTERVAL": "1"})
    d.url = f"http://127.0.0.1:{port}"
    try:
        d.start()
        d.ok("user", "create", "alice", "--password", input="alice-password\n")
        d.ok("user", "create", "bob")
        d.ok("user", "passwd", "bob", input="bob-password\n")
        yield d
    finally:
        d.cleanup()


@pytest.fixture(scope="module")
def browser():
    """The machine's Chromium (never a downloaded build); each login gets a fresh context (profile)."""
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def site():
    """A small web site on the host for a bookmark to point at."""
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<html><body><h1 id=hello>bookmarked status page</h1></body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/"
    finally:
        srv.shutdown()
        srv.server_close()


def login(browser, url: str, user: str, password: str | None = None, token: str | None = None):
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})   # a fresh profile: own cookies
    page = ctx.new_page()
    page.goto(url + "/")
    expect(page).to_have_url(url + "/ui/login")
    if token:
        page.fill("#token", token)
        page.click("#login-token-submit")
    else:
        page.fill("#user", user)
        page.fill("#password", password)
        page.click("#login-submit")
    expect(page.locator("#who")).to_contain_text(user)
    return ctx, page


def screen_lines(page) -> list[str]:
    return [ln.replace("\xa0", " ").rstrip() for ln in page.locator(".xterm-rows").inner_text().splitlines()]


def wait_js(page, expr: str, timeout: float = 30):
    """Poll a JS expression with page.evaluate (the page's CSP forbids the eval wait_for_function uses)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if page.evaluate(expr):
            return
        time.sleep(0.2)
    raise AssertionError(f"still false after {timeout}s: {expr}")


def wait_screen(page, want, what: str, timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = screen_lines(page)
        if want(lines):
            return lines
        time.sleep(0.2)
    raise AssertionError(f"{what}: not on the screen:\n" + "\n".join(screen_lines(page)))


def answered(answer: str):
    """A screen line that is the command's answer (an early keystroke's echo may precede it)."""
    return lambda lines: any(ln == answer or ln.endswith("R" + answer) for ln in lines)


def run_in_console(page, command: str, answer: str, timeout: float = 20) -> list[str]:
    """Wait for the shell's prompt, type a command, wait for its answer on the screen."""
    wait_screen(page, lambda lines: any(ln.endswith("#") for ln in lines), "the prompt", timeout)
    page.locator("#terminal").click()
    page.keyboard.type(command + "\n")
    return wait_screen(page, answered(answer), command, timeout)


def test_dashboard_end_to_end(web, browser, site):
    ARTIFACTS.mkdir(exist_ok=True)
    url = web.url
    ctx, page = login(browser, url, "alice", "alice-password")
    try:
        # a wrong password: the login page says so (another fresh context)
        bad = browser.new_context()
        bp = bad.new_page()
        bp.goto(url + "/ui/login")
        bp.fill("#user", "alice")
        bp.fill("#password", "not-her-password")
        bp.click("#login-submit")
        expect(bp.locator("#login-error")).to_contain_text("wrong user name or password")
        bad.close()

        # create from the form, see it running
        page.click("#nav-new")
        page.fill("#f-name", "webt1")
        page.select_option("#f-template", "minimal")
        page.fill("#f-ram", "128M")
        page.fill("#f-swap", "64M")
        page.click("#f-submit")
        page.wait_for_url(url + "/ui/instances/webt1", timeout=T)
        expect(page.locator("#state")).to_have_text("running", timeout=T)
        assert web.client.instance("webt1")["owner"] == "alice"

        # the inventory: live state from the event stream (changed behind the page's back by the CLI)
        page.goto(url + "/ui/")
        row = page.locator("tr[data-name=webt1]")
        expect(row.locator(".state")).to_have_text("running", timeout=T)
        expect(page.locator("#live")).to_contain_text("live")
        web.ok("suspend", "webt1")
        expect(row.locator(".state")).to_have_text("suspended", timeout=20_000)
        web.ok("resume", "webt1")
        expect(row.locator(".state")).to_have_text("running", timeout=20_000)
        expect(row).to_contain_text("10.88.0.")            # its address
        expect(row).to_contain_text("/ 128.0M")            # RAM use against its limit
        # filter and sort (client-side)
        page.fill("#filter", "no-such-thing")
        expect(row).to_have_count(0)
        page.fill("#filter", "webt1")
        expect(row).to_have_count(1)
        page.fill("#filter", "")

        # edit limits live from the instance page
        page.goto(url + "/ui/instances/webt1")
        page.fill("#l-ram", "96M")
        page.click("#l-submit")
        expect(page.locator("#progress .msg")).to_contain_text("success", timeout=T)
        inst = web.client.instance("webt1")
        assert inst["limits"]["ram"] == 96 << 20 and inst["live"]["ram"] == 96 << 20
        cg = web.cgroups
        limit_file = "memory.limit_in_bytes" if cg.version == 1 else "memory.max"
        assert int(cg.read("memory" if cg.version == 1 else "", str(inst["ctid"]), limit_file)) == 96 << 20

        # console: a real pty over the WebSocket (cookie-authenticated)
        cpage = ctx.new_page()
        cpage.goto(url + "/ui/instances/webt1/console")
        expect(cpage.locator("#console-status")).to_have_text("● connected", timeout=20_000)
        run_in_console(cpage, "hostname", "webt1")
        rows, cols = cpage.evaluate("[window.ovpsTerm.rows, window.ovpsTerm.cols]")
        run_in_console(cpage, "stty size", f"{rows} {cols}")
        cpage.set_viewport_size({"width": 700, "height": 500})          # resize: the pty follows
        wait_js(cpage, f"window.ovpsTerm.cols !== {cols}")
        rows2, cols2 = cpage.evaluate("[window.ovpsTerm.rows, window.ovpsTerm.cols]")
        run_in_console(cpage, "stty size", f"{rows2} {cols2}")
        cpage.screenshot(path=str(ARTIFACTS / "console.png"))
        cpage.close()

        # bookmarks: add one, replace it (edit), follow it; also shown in the inventory, with ssh
        page.goto(url + "/ui/instances/webt1")
        page.fill("#bm-label", "old link")
        page.fill("#bm-url", "http://127.0.0.1:1/")
        page.click("#bm-add")
        expect(page.locator("#bookmarks li")).to_have_count(1)
        page.locator("#bookmarks li button").click()
        expect(page.locator("#bookmarks li")).to_have_count(0)
        page.fill("#bm-label", "status page")
        page.fill("#bm-url", site)
        page.click("#bm-add")
        expect(page.locator("#bookmarks a")).to_have_text("status page")
        expect(page.locator("#ssh-command")).to_contain_text("ssh root@10.88.0.")
        with ctx.expect_page() as opened:
            page.click("#bookmarks a")
        target = opened.value
        expect(target.locator("#hello")).to_have_text("bookmarked status page")
        target.close()
        page.goto(url + "/ui/")
        expect(page.locator("tr[data-name=webt1] a.bookmark")).to_have_text("status page")
        expect(page.locator("tr[data-name=webt1] .ssh")).to_contain_text("ssh root@")
        page.screenshot(path=str(ARTIFACTS / "inventory.png"), full_page=True)

        # graphs from the daemon's samples (every second here)
        page.goto(url + "/ui/instances/webt1")
        wait_js(page, "Number(document.getElementById('g-memory').dataset.points || 0) >= 2")
        wait_js(page, "Number(document.getElementById('g-cpu').dataset.points || 0) >= 1")
        assert page.locator("#g-memory polyline").count() == 1
        expect(page.locator("#beancounters")).to_contain_text("physpages")
        page.screenshot(path=str(ARTIFACTS / "instance.png"), full_page=True)

        # a second user sees nothing of it
        bctx, bpage = login(browser, url, "bob", "bob-password")
        expect(bpage.locator("#empty")).to_be_visible(timeout=20_000)
        assert bpage.locator("tr[data-name=webt1]").count() == 0
        r = bpage.goto(url + "/ui/instances/webt1")
        assert r.status == 404
        assert bpage.request.get(url + "/1.0/instances/webt1").status == 404
        bctx.close()

        # stop with the button (progress shown), then destroy with confirmation
        page.click("#act-stop")
        expect(page.locator("#state")).to_have_text("stopped", timeout=T)
        expect(page.locator("#progress .msg")).to_contain_text("success")
        page.once("dialog", lambda d: d.accept())
        page.click("#act-destroy")
        expect(page).to_have_url(url + "/ui/", timeout=T)
        expect(page.locator("#empty")).to_be_visible(timeout=20_000)
        assert web.client.instances() == []
    finally:
        ctx.close()


def test_node_page_for_admins_only(web, browser):
    token = web.client.create_token("admin", "web test")["token"]
    ctx, page = login(browser, web.url, "admin", token=token)
    try:
        page.click("header nav a[href=\"/ui/node\"]")
        expect(page.locator("#networks")).to_contain_text("default")
        expect(page.locator("#templates")).to_contain_text("minimal")
        expect(page.locator("#capacity")).to_contain_text("CPUs")
    finally:
        ctx.close()
    bctx, bpage = login(browser, web.url, "bob", "bob-password")
    try:
        assert bpage.locator("header nav a[href=\"/ui/node\"]").count() == 0
        assert bpage.goto(web.url + "/ui/node").status == 403
    finally:
        bctx.close()
