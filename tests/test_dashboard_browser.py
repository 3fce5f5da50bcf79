"""The live dashboard in a real browser: `python -m txpipe demo` prints its DASHBOARD line, headless
Chromium opens the page while the stream runs, and the windows and dead letters it shows appear
and then change. Every request the page makes goes to the page's own server (no CDN), and the
demo's reconciliation still balances with the page open. A screenshot is kept
(DASHBOARD_SCREENSHOT=PATH keeps it there too)."""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
INSTALL = "apt-get update && apt-get install -y chromium"

pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.emulator,  # the demo starts its own
    pytest.mark.skipif(CHROMIUM is None, reason=f"no chromium on PATH: {INSTALL}"),
]


class Chromium:
    """Headless Chromium driven over the DevTools protocol (websocket-client)."""

    FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
             "--remote-allow-origins=*", "--window-size=1400,1900", "--hide-scrollbars")

    def __init__(self, profile: Path):
        import websocket

        self.process = subprocess.Popen(
            [CHROMIUM, *self.FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (active.exists() and active.read_text().strip()):
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(active.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30,
                                              suppress_origin=True)
        self.ids = itertools.count(1)
        self.requests: list[str] = []
        self.call("Network.enable")

    def call(self, method: str, **params):
        ident = next(self.ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("method") == "Network.requestWillBeSent":
                self.requests.append(message["params"]["request"]["url"])
            if message.get("id") == ident:
                assert "error" not in message, message
                return message.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.process.terminate()
            self.process.wait(10)


HEADLINE = """(() => {
  const h = document.getElementById('headline');
  if (!h) return null;
  const rows = t => document.querySelectorAll('#' + t + ' tbody tr').length;
  return {windows: +h.dataset.windows, transactions: +h.dataset.transactions,
          dead: +h.dataset.deadLetters, run: h.dataset.run,
          windowRows: rows('windows-table'), deadRows: rows('dead-letters-table'),
          charts: document.querySelectorAll('.js-plotly-plot .bars, .js-plotly-plot .scatter').length,
          status: document.getElementById('status').innerText};
})()"""


def _wait(browser: Chromium, ok, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    seen = None
    while time.monotonic() < deadline:
        seen = browser.evaluate(HEADLINE)
        if seen and ok(seen):
            return seen
        time.sleep(0.5)
    page = browser.evaluate("document.body ? document.body.innerText.slice(0, 400) : ''")
    raise AssertionError(f"the page did not show it within {seconds:g} s: {seen}; page: {page!r}")


def test_the_demo_page_shows_windows_and_dead_letters_arriving(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PUBSUB_", "BIGQUERY_", "DEMO_", "WINDOW_", "ALLOWED_"))}
    env.update(DEMO_SECONDS="36", DEMO_RATE="120", WINDOW_SIZE_SECONDS="4",
               ALLOWED_LATENESS_SECONDS="8", DEMO_DASHBOARD_PORT="0", PYTHONUNBUFFERED="1")
    demo = subprocess.Popen([sys.executable, "-m", "txpipe", "demo", "--seed", "5"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    browser = None
    lines: list[str] = []
    try:
        for line in demo.stdout:
            lines.append(line)
            if found := re.match(r"^DASHBOARD (http://127\.0\.0\.1:\d+/)$", line.strip()):
                url = found.group(1)
                break
        else:
            pytest.fail("the demo printed no DASHBOARD line:\n" + "".join(lines))
        browser = Chromium(tmp_path / "profile")
        browser.call("Page.navigate", url=url)
        first = _wait(browser, lambda s: s["windows"] > 0 and s["dead"] > 0, 45)
        assert first["windowRows"] == min(first["windows"], 40) and first["deadRows"] >= 1
        later = _wait(browser, lambda s: s["transactions"] > first["transactions"]
                      and s["dead"] > first["dead"], 40)
        assert later["run"] == first["run"] and later["charts"] >= 4
        assert "watermark" in later["status"] and "backlog" in later["status"]
        browser.screenshot(tmp_path / "dashboard.png")
        if target := os.environ.get("DASHBOARD_SCREENSHOT"):
            shutil.copy(tmp_path / "dashboard.png", target)
        assert (tmp_path / "dashboard.png").stat().st_size > 20_000
        foreign = [u for u in browser.requests if not u.startswith((url, "data:"))]
        assert browser.requests and not foreign, foreign  # no CDN: everything from the page
        rest, _ = demo.communicate(timeout=120)
        lines.append(rest)
    finally:
        if browser is not None:
            browser.close()
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    out = "".join(lines)
    assert demo.returncode == 0, out
    assert re.search(r"^CONSERVATION .* lost=0$", out, re.M), out
