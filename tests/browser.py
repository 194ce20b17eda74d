"""What the browser tests share: Debian's Chromium under Playwright, axe-core's audit, and moving
through the page with the Tab key as a keyboard user does."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

# Debian's Chromium, driven by Playwright (its own browser download is not used).
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa"]


@contextlib.contextmanager
def chromium():
    """Debian's Chromium under Playwright, headless, for one module or test."""
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "install Debian's chromium (the README's test command does)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def axe_violations(page) -> list[str]:
    """axe-core's WCAG 2.0-2.2 A and AA violations on the page as drawn now, one line each."""
    import axe_playwright_python  # requirements-dev.txt pins it: axe-core 4.12.1 as axe.min.js

    page.wait_for_timeout(300)  # let transitions settle (contrast is measured on what is drawn)
    if not page.evaluate("typeof axe !== 'undefined'"):
        page.add_script_tag(content=(Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text())
    result = page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", WCAG)
    return [f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']]} {v['nodes'][0]['failureSummary']}"
            for v in result["violations"]]


def tab_to(page, selector: str, limit: int = 80) -> list[str]:
    """Press Tab until the focused element matches `selector`; returns what was passed on the way.
    Each stop must show a focus ring."""
    passed = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        here = page.evaluate("""s => { const e = document.activeElement; const st = getComputedStyle(e);
            return {match: e.matches(s), name: e.getAttribute('aria-label') || e.innerText || e.tagName,
                    ring: st.outlineStyle !== 'none' && parseFloat(st.outlineWidth) >= 2}; }""", selector)
        passed.append(here["name"])
        if here["match"]:
            assert here["ring"], f"no visible focus ring on {selector}"
            return passed
    raise AssertionError(f"Tab never reached {selector}; passed {passed}")
