"""The report in a real headless browser: Debian's Chromium, driven over the DevTools protocol
(``tests/chromium.py``). Checked: the page loads, every ``<img>`` decodes (``naturalWidth > 0``),
no console errors, exceptions or failed loads; a screenshot is written next to the report.
Skips only when no Chromium binary exists (``bash setup.sh`` installs it where apt-get works).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from chromium import CHROMIUM, Browser, open_page
from test_report import DATA_HASH, FINDINGS, PARAMS, write_outputs

from zfnet.report.html import Meta, Run, write_report

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (apt-get install chromium)")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """``index.html`` of a report on stage outputs laid out as the registry expects (some missing)."""
    root = tmp_path_factory.mktemp("project")
    write_outputs(root)
    runs = [Run("a" * 32, "train", "train", "", "FINISHED", "2026-01-01 00:00:00", "1", "p" * 32),
            Run("b" * 32, "ablate@zfnet", "ablate", "zfnet", "FINISHED", "2026-01-01 00:01:00", "1", "p" * 32)]
    meta = Meta("2026-01-01 00:02:00 UTC", "0" * 40, "default", DATA_HASH, "seed: 0\n", "sqlite:///mlflow.db", "zfnet",
                runs=runs)
    write_report(root / "reports", meta, PARAMS, root, findings=FINDINGS)
    return root / "reports" / "index.html"


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path / "chromium-profile")
    yield b
    b.close()


def test_report_loads_with_every_image_and_no_console_error(browser, report):
    out = report.parent
    open_page(browser, report)
    assert browser.evaluate("document.readyState") == "complete"
    assert browser.evaluate("document.title").startswith("zfnet")
    images = browser.evaluate("Array.from(document.images, i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
    assert len(images) == len(list((out / "img").rglob("*.png"))) > 0
    broken = [src for src, complete, width in images if not complete or width == 0]
    assert not broken, f"images that did not load: {broken}"
    sections = browser.evaluate("Array.from(document.querySelectorAll('section[id]'), s => s.id)")
    assert {"contents", "run", "fig2", "table1", "table2-3"} <= set(sections)
    summary = browser.evaluate("document.getElementById('summary').innerText")
    assert summary.startswith("1 of 2 claims hold, 0 inconclusive, 1 fail")
    verdicts = browser.evaluate("Array.from(document.querySelectorAll('#fig7 .verdict .badge, #table1 .verdict .badge'),"
                                " b => [b.innerText, getComputedStyle(b).backgroundColor])")
    assert verdicts == [["holds", "rgb(46, 125, 50)"], ["fails", "rgb(198, 40, 40)"]]  # green, red
    assert browser.errors() == []
    browser.screenshot(out / "screenshot.png")
    assert (out / "screenshot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_broken_image_is_caught(browser, report):
    """The check can fail: a page whose image is missing shows up as a failed load and naturalWidth 0."""
    page = report.with_name("broken.html")
    page.write_text(report.read_text().replace('src="img/', 'src="gone/', 1))
    open_page(browser, page)
    widths = browser.evaluate("Array.from(document.images, i => i.naturalWidth)")
    assert widths[0] == 0 and all(w > 0 for w in widths[1:])
    assert any("ERR_FILE_NOT_FOUND" in e for e in browser.errors())
