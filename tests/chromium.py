"""Headless Chromium driven over the DevTools protocol, for the report's browser tests.

The protocol runs over a pipe (``--remote-debugging-pipe``: commands on fd 3, replies on fd 4,
NUL-terminated JSON), so no extra Python package and no network port are needed.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

CHROMIUM = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def _onto_3_and_4(read_fd: int, write_fd: int) -> None:
    """In the child: make ``read_fd`` fd 3 and ``write_fd`` fd 4 (via copies, so neither is
    overwritten before it is moved)."""
    r, w = os.dup(read_fd), os.dup(write_fd)
    os.dup2(r, 3)
    os.dup2(w, 4)


class Browser:
    """Headless Chromium with one page, driven over the DevTools pipe."""

    def __init__(self, profile: Path, width: int = 1200, height: int = 900):
        read_cmd, self._cmd = os.pipe()  # we write commands; chromium reads fd 3
        self._out, write_out = os.pipe()  # chromium writes fd 4; we read
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-extensions", "--remote-debugging-pipe", f"--user-data-dir={profile}",
             f"--window-size={width},{height}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=lambda: _onto_3_and_4(read_cmd, write_out),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(read_cmd)
        os.close(write_out)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buf:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise TimeoutError("chromium did not answer over the DevTools pipe")
            chunk = os.read(self._out, 1 << 20)
            if not chunk:
                raise EOFError("chromium closed the DevTools pipe")
            self._buf += chunk
        message, self._buf = self._buf.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, timeout: float = 30, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._cmd, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        while True:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.events.append(self._read(timeout))

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                         awaitPromise=True)["result"]["value"]

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads (``Log`` errors) seen so far."""
        found = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                found.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif e.get("method") == "Runtime.exceptionThrown":
                found.append("exception: " + p["exceptionDetails"].get("text", ""))
            elif e.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error":
                found.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}")
        return found

    def screenshot(self, path: Path, full_page: bool = False) -> None:
        params = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics", session=True)["cssContentSize"]
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        data = self.call("Page.captureScreenshot", session=True, timeout=60, **params)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (TimeoutError, EOFError, OSError, RuntimeError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._cmd)
        os.close(self._out)


def open_page(browser: Browser, page: Path) -> None:
    """Load ``page`` (a file) and wait for its load event (every image loaded or failed)."""
    browser.call("Page.navigate", session=True, url=page.resolve().as_uri())
    browser.wait_for("Page.loadEventFired")
