"""Headless Debian chromium driven over the Chrome DevTools Protocol: enough to use a single-page app.

    with Browser(profile_dir) as page:
        page.goto("http://127.0.0.1:8080/dags")
        page.wait_for("document.body.innerText.includes('ednet_ingest')")
        page.screenshot("shot.png")

`chromium --dump-dom` cannot click, and the Airflow UI is a React app: the
tests need to wait for what it renders and to press its buttons. This is one
page over one websocket (the `websockets` package Airflow already brings);
every host but 127.0.0.1 is unresolvable for the browser, so nothing comes
from the network.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import subprocess
import time
import urllib.request
from typing import Any

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--hide-scrollbars", "--mute-audio",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]  # fmt: skip


def require_chromium() -> None:
    """Without chromium the browser tests fail when CI=true and are skipped otherwise (scripts/ensure-chromium.sh)."""
    import pytest

    if os.path.exists(CHROMIUM):
        return
    message = f"{CHROMIUM} is missing: run scripts/ensure-chromium.sh"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


class Browser:
    def __init__(self, profile_dir: str, width: int = 1400, height: int = 900, timeout: float = 60) -> None:
        self.profile_dir, self.width, self.height, self.timeout = profile_dir, width, height, timeout
        self._ids = itertools.count(1)
        self._closing = contextlib.ExitStack()

    def __enter__(self) -> Browser:
        from websockets.sync.client import connect

        port_file = os.path.join(self.profile_dir, "DevToolsActivePort")
        self.process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile_dir}", "--remote-debugging-port=0",
             f"--window-size={self.width},{self.height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            port = self._poll(lambda: os.path.exists(port_file) and open(port_file).read().split("\n")[0],
                              "chromium's DevToolsActivePort")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                pages = [t for t in json.load(r) if t["type"] == "page"]
            self.ws = self._closing.enter_context(connect(pages[0]["webSocketDebuggerUrl"], max_size=None,
                                                          open_timeout=10))
            self.send("Page.enable")
            self.send("Runtime.enable")
            self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                      deviceScaleFactor=1, mobile=False)  # the viewport itself, whatever the window's frame
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._closing.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def send(self, method: str, **params: Any) -> dict:
        """One command; events arriving before its answer are dropped."""
        call_id = next(self._ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def wait_for(self, expression: str, what: str | None = None) -> Any:
        """Poll a JavaScript expression until it is truthy (the app renders asynchronously); its value."""
        return self._poll(lambda: self.evaluate(expression), what or expression)

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def click(self, selector: str) -> None:
        """Click the first element matching the selector, once it is there."""
        self.wait_for(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (e) e.click();"
                      " return !!e; })()", selector)

    def click_text(self, selector: str, text: str) -> None:
        """Click the first element matching the selector whose visible text is exactly `text`."""
        found = self.wait_for(
            f"(() => {{ const e = [...document.querySelectorAll({json.dumps(selector)})]"
            f".find(e => e.innerText.trim() === {json.dumps(text)}); if (e) e.click(); return !!e; }})()",
            f"{selector} {text!r}")
        assert found

    def screenshot(self, path: str, selector: str | None = None, margin: int = 16) -> None:
        """The viewport, or the box around every element matching the selector (plus a margin)."""
        params: dict[str, Any] = {"format": "png"}
        if selector:
            box = self.evaluate(
                f"(() => {{ const r = [...document.querySelectorAll({json.dumps(selector)})]"
                ".map(e => e.getBoundingClientRect()).filter(r => r.width > 0);"
                " return r.length && [Math.min(...r.map(b => b.left)), Math.min(...r.map(b => b.top)),"
                " Math.max(...r.map(b => b.right)), Math.max(...r.map(b => b.bottom))]; })()")
            assert box, f"nothing to screenshot: {selector}"
            left, top = max(0, box[0] - margin), max(0, box[1] - margin)
            params["clip"] = {"x": left, "y": top, "width": box[2] + margin - left, "height": box[3] + margin - top,
                              "scale": 1}
        data = self.send("Page.captureScreenshot", **params)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def _poll(self, probe: Any, what: str) -> Any:
        deadline = time.monotonic() + self.timeout
        while True:
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"not seen within {self.timeout:.0f}s: {what}")
            time.sleep(0.2)  # polling the page's state with a deadline
