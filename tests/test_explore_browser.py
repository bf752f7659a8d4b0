"""``zfnet explore`` in a real headless browser (``tests/chromium.py``) against the tiny profile's real
``dvc repro``: the server started by the real command on a free port; Chromium opens ``/``, clicks
into a layer and into a channel, sorts the maps, uploads an image through the form, and on every
page every ``<img>`` decodes and the console shows no error; then the static export opens from disk
the same way. Screenshots of each page are written next to the test's files.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from chromium import CHROMIUM, Browser
from test_explore import jpeg, start, stop

import conftest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (apt-get install chromium)")]

IMAGES = "Array.from(document.images, i => [i.getAttribute('src'), i.complete, i.naturalWidth])"


class Page:
    """One Chromium tab, with the errors of every page it showed collected."""

    def __init__(self, browser: Browser):
        self.browser, self.errors = browser, []

    def _settle(self, timeout: float = 60) -> None:
        """Wait for the load event of the navigation just started, and for every image to finish."""
        self.browser.wait_for("Page.loadEventFired", timeout)
        self.wait_until("Array.from(document.images).every(i => i.complete)", timeout)

    def _forget(self) -> None:
        self.errors += self.browser.errors()
        self.browser.events.clear()

    def open(self, url: str) -> None:
        self._forget()
        self.browser.call("Page.navigate", session=True, url=url)
        self._settle()

    def click(self, selector: str) -> None:
        """Click the first element matching ``selector`` (a link: wait for the page it opens)."""
        self._forget()
        assert self.browser.evaluate(f"!!document.querySelector({selector!r})"), selector
        self.run(f"document.querySelector({selector!r}).click()")
        self._settle()

    def run(self, statement: str) -> None:
        """Run a JavaScript statement (it returns nothing)."""
        self.browser.evaluate(f"{statement}; true")

    def wait_until(self, condition: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.browser.evaluate(condition):
            assert time.monotonic() < deadline, f"timed out waiting for {condition}"
            time.sleep(0.1)

    def images(self) -> list:
        """The page's images; each must have loaded and decoded."""
        images = self.browser.evaluate(IMAGES)
        broken = [src for src, complete, width in images if not complete or width == 0]
        assert images and not broken, f"{self.browser.evaluate('location.href')}: images that did not load: {broken}"
        return images

    def path(self) -> str:
        return self.browser.evaluate("location.pathname")


@pytest.fixture
def page(tmp_path):
    browser = Browser(tmp_path / "chromium-profile", 1280, 900)
    yield Page(browser)
    browser.close()


def test_a_user_browses_a_run_and_analyses_an_image(tiny_pipeline, page, tmp_path):
    root = tiny_pipeline[0]
    port = conftest.free_port()
    proc = start(["--run", str(root)], root, port)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        page.open(f"http://127.0.0.1:{port}/")
        assert page.browser.evaluate("document.title").startswith("zfnet explore")
        assert len(page.images()) == 5 * 8  # the 8 strongest maps of each layer
        summary = page.browser.evaluate("document.getElementById('summary').innerText")
        assert re.match(r"\d+ of 19 of the paper's claims hold, \d+ inconclusive, \d+ fail", summary), summary
        links = page.browser.evaluate("Array.from(document.querySelectorAll('#run a'), a => a.getAttribute('href'))")
        ui = tiny_pipeline[2]  # report.mlflow_ui of the tiny run: each stage's run linked into it
        assert sum(link.startswith(f"{ui}/#/experiments/") and "/runs/" in link for link in links) >= 10, links
        page.browser.screenshot(shots / "overview.png", full_page=True)

        page.click(".layer-card h3 a[href='/layer/conv2']")
        assert page.path() == "/layer/conv2" and len(page.images()) == 16
        page.run("document.querySelector('button[data-sort=value]').click()")
        values = page.browser.evaluate("Array.from(document.querySelectorAll('#maps .map'), m => +m.dataset.value)")
        assert values == sorted(values, reverse=True) and len(values) == 16
        page.browser.screenshot(shots / "layer.png", full_page=True)

        page.click("#maps .map")  # the strongest map, first after sorting
        assert page.path() == f"/layer/conv2/{page.browser.evaluate('location.pathname.split(`/`).pop()')}"
        sources = [src for src, _, _ in page.images()]
        assert sum("/tile/projection/" in s for s in sources) == 9 and sum("/tile/patch/" in s for s in sources) == 9
        assert sum("/tile/evolution/" in s for s in sources) == 3  # the tiny profile's milestones 1, 2, 3
        page.browser.screenshot(shots / "channel.png", full_page=True)

        page.click("header a.brand")
        upload = tmp_path / "photo.jpg"
        upload.write_bytes(jpeg())
        document = page.browser.call("DOM.getDocument", session=True)["root"]["nodeId"]
        node = page.browser.call("DOM.querySelector", session=True, nodeId=document, selector="input[name=image]")["nodeId"]
        page.browser.call("DOM.setFileInputFiles", session=True, nodeId=node, files=[str(upload)])
        page.run("document.querySelector('#analyze-form select').value = 'conv3'")
        page.run("document.querySelector('#analyze-form button').click()")
        page.wait_until("!document.getElementById('analysis').hidden", 120)
        page.wait_until("Array.from(document.images).every(i => i.complete)")
        analysed = [src for src, _, _ in page.images() if src.startswith("/api/analysis/")]
        assert len(analysed) == 6
        assert page.browser.evaluate("document.querySelectorAll('#predictions tr').length") == 1 + 4
        assert "conv3 map" in page.browser.evaluate("document.getElementById('analysis').innerText")
        page.browser.screenshot(shots / "analysis.png", full_page=True)
        page._forget()
        assert page.errors == []
    finally:
        stop(proc)


def test_the_static_export_opens_from_disk(tiny_pipeline, page, tmp_path):
    from zfnet.cli import main

    root = tiny_pipeline[0]
    site = tmp_path / "site"
    assert main(["explore", "--run", str(root), "--export", str(site)]) == 0
    page.open((site / "index.html").as_uri())
    assert page.browser.evaluate("document.querySelector('#analyze-form')") is None  # no upload offline
    page.images()
    page.click(".layer-card h3 a")
    assert page.path().endswith("/layer/conv1.html") and page.images()
    page.click("#maps .map")
    assert page.path().endswith("/layer/conv1/0.html") and len(page.images()) == 9 + 9 + 3 + 1  # and its filter
    page._forget()
    assert page.errors == []
