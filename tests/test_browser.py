"""A person's path through the page, in headless Debian Chromium driven by Playwright."""

import http.server
import os

import pytest

from captioner.app.ui import example_photos
from browser import CHROMIUM, CHROMIUM_ARGS
from helpers import encode, photo, serve_on_loopback

pytestmark = pytest.mark.browser



@pytest.fixture(scope="module")
def page(running_app):
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "install Debian's chromium (the README's test command does)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(running_app.url)
        page.wait_for_selector("#caption-button", timeout=60_000)
        yield page
        browser.close()


def caption_in_box(page, previous=None):
    page.wait_for_function(
        "prev => { const v = document.querySelector('#caption textarea').value; return v.length > 0 && v !== prev; }",
        arg=previous, timeout=60_000,
    )
    return page.locator("#caption textarea").input_value()


def test_upload_and_caption(page, captioner):
    photo = example_photos()[1]
    page.locator("#photo input[type=file]").set_input_files(photo)
    page.wait_for_selector("#photo img", timeout=30_000)
    page.click("#caption-button")
    assert caption_in_box(page) == captioner.caption([photo])[0][0].text


def test_clicking_an_example_captions_it(page, captioner):
    previous = page.locator("#caption textarea").input_value()
    expected_all = [captions[0].text for captions in captioner.caption(example_photos())]
    # An example whose caption differs from the one on screen, so the change is visible.
    index = next(i for i, text in enumerate(expected_all) if text != previous)
    page.locator("button.gallery-item").nth(index).click()
    assert caption_in_box(page, previous) == expected_all[index]


def test_strategy_shows_only_its_controls(page):
    page.click("#settings button, #settings .label-wrap")
    page.get_by_label("Sampling").check()
    page.wait_for_selector("#temperature", state="visible", timeout=10_000)
    assert not page.locator("#num-beams").is_visible()
    page.get_by_label("Beam search").check()
    page.wait_for_selector("#num-beams", state="visible", timeout=10_000)
    assert not page.locator("#temperature").is_visible()


def test_many_images_tab(page, captioner, tmp_path):
    page.get_by_role("tab", name="Many images").click()
    photos = example_photos()[:3]
    page.locator("#many-files input[type=file]").set_input_files(photos)
    page.wait_for_timeout(1000)
    page.click("#many-button")
    expected = captioner.caption(photos)[0][0].text
    page.wait_for_function(
        "text => document.querySelector('#many-table').innerText.includes(text)", arg=expected, timeout=60_000
    )
    table_text = page.locator("#many-table").inner_text()
    assert all(os.path.basename(p) in table_text for p in photos)
    page.wait_for_selector("#many-csv a", timeout=30_000)


class OnePhoto(http.server.BaseHTTPRequestHandler):
    body = encode(photo(41))

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


def paste_link(page, url):
    page.get_by_role("tab", name="Caption a photo").click()
    page.locator("#image-link textarea, #image-link input").first.fill(url)
    page.locator("#image-link textarea, #image-link input").first.press("Enter")


def test_a_pasted_image_link_is_captioned_and_a_private_one_refused(page, running_app, captioner):
    from captioner.app.ui import AppLimits
    from helpers import RunningApp

    with serve_on_loopback(OnePhoto) as server:
        # The public app (the Space's settings) refuses a loopback link, says why, and goes on.
        paste_link(page, f"{server}/cat.png")
        toast = page.locator("[data-testid='toast-body']").filter(has_text="Could not use this image link")
        toast.first.wait_for(timeout=30_000)
        assert "127.0.0.0/8, Loopback: links to it are refused" in toast.first.inner_text()
        # An intranet app (--allow-private-urls) loads the same link into the photo box and captions it.
        intranet = RunningApp(captioner, AppLimits(allow_private_urls=True))
        try:
            other = page.context.browser.new_page(viewport={"width": 1280, "height": 1100})
            other.goto(intranet.url)
            other.wait_for_selector("#caption-button", timeout=60_000)
            paste_link(other, f"{server}/cat.png")
            other.wait_for_selector("#photo img", timeout=30_000)
            other.click("#caption-button")
            assert caption_in_box(other) == captioner.caption([photo(41)])[0][0].text
            other.close()
        finally:
            intranet.close()
