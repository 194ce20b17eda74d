"""The review tab in headless Chromium, as a person uses it: a zip in, captions reviewed, a bulk
prefix previewed and applied, an undo, a reload, an export that datasets reads and fine-tuning
takes; a folder upload; axe-core finds no violation in any of those states."""

import io
import json
import zipfile

import pytest

from browser import axe_violations, chromium, tab_to
from helpers import encode, photo, scores_without_java

pytestmark = pytest.mark.browser


# Generous waits: at the end of the suite the other test process runs the benchmark's smoke run (two
# app servers and two baseline processes), and the browser and the app share what is left.
WAIT = 180_000


def status_says(page, text, timeout=WAIT):
    try:
        page.wait_for_function("t => (document.querySelector('#review-status') || {}).innerText?.includes(t)",
                               arg=text, timeout=timeout)
    except Exception:  # noqa: BLE001 - say what the page showed instead, then fail as before
        print("the status said:", page.locator("#review-status").inner_text(timeout=5_000))
        raise


def upload(page, archive, given=False):
    """The zip into the upload box. Under the suite's load an upload was seen both to show its name
    only after a minute (a second one sent then arrived too: two sets) and to vanish (the box
    redraws its <input>): so wait the full WAIT, and only then send it once more."""
    if not given:
        page.locator("#review-files input[type=file]").set_input_files(str(archive))
    try:
        page.wait_for_selector(f"#review-files >> text={archive.name}", timeout=WAIT)
    except Exception:  # noqa: BLE001 - playwright's TimeoutError: send it again, then fail loudly
        page.locator("#review-files input[type=file]").set_input_files(str(archive))
        page.wait_for_selector(f"#review-files >> text={archive.name}", timeout=WAIT)


def choose_file(page):
    """Space on the focused upload button opens the file chooser. In a clean-clone run under the
    suite's load a press once opened nothing for 180 s (nothing uploaded, so nothing to undo); a
    person presses again, and so does this, once, after a minute."""
    for wait in (60_000, WAIT):
        try:
            with page.expect_file_chooser(timeout=wait) as chooser:
                page.keyboard.press("Space")
            return chooser.value
        except Exception:  # noqa: BLE001 - playwright's TimeoutError; the second time it is raised
            if wait == WAIT:
                raise
            print("the file chooser did not open in a minute; pressing Space again")
            page.locator("#review-files button").focus()  # where the Tab key had brought it


@pytest.fixture
def page(running_app):
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 1400})
        page = context.new_page()
        page.set_default_timeout(WAIT)  # every wait below, not only the ones that name a timeout
        page.goto(running_app.url)
        page.wait_for_selector("#caption-button", timeout=WAIT)
        page.get_by_role("tab", name="Review").click()
        page.wait_for_selector("#review-load", state="visible")
        yield page
        context.close()


def test_the_whole_review_loop_in_the_browser(page, tmp_path, tiny_checkpoint, monkeypatch):
    page.wait_for_function("() => document.querySelector('#review-counts').innerText.includes('No set loaded yet')")
    assert axe_violations(page) == [], "review tab, empty"
    archive = tmp_path / "holiday photos.zip"
    with zipfile.ZipFile(archive, "w") as packed:
        for i, name in enumerate(["beach.jpg", "day 2/hotel.png", "day 2/pool (1).png", "=odd.png"]):
            packed.writestr(name, encode(photo(i, (40, 30)), "JPEG" if name.endswith(".jpg") else "PNG"))
        packed.writestr("beach.txt", "my words for the beach")
        packed.writestr("day 2/metadata.jsonl", json.dumps({"file_name": "hotel.png", "text": "the hotel"}) + "\n")
        packed.writestr("broken.jpg", b"not a photo")
        packed.writestr("readme.pdf", b"%PDF-1.4")
    upload(page, archive)
    page.click("#review-load")
    status_says(page, "captioned 3 of 3")  # the broken image is found out by trying
    status = page.locator("#review-status").inner_text()
    assert "2 captions kept as they were" in status and "1 file that is not an image left out" in status
    table = page.locator("#review-table").inner_text()
    assert "my words for the beach" in table and "the hotel" in table and "could not be read" in table
    assert axe_violations(page) == [], "review tab, loaded"

    page.locator("#review-flag input").click()
    page.get_by_role("option", name="error (1)").click()
    page.wait_for_function("() => !document.querySelector('#review-table').innerText.includes('the hotel')")
    assert axe_violations(page) == [], "review tab, filtered"
    page.locator("#review-flag input").click()
    page.get_by_role("option", name="all").click()
    page.wait_for_function("() => document.querySelector('#review-table').innerText.includes('the hotel')")

    page.locator("#review-pick input").click()
    page.get_by_role("option", name="=odd.png").click()
    # Its caption arrives in the box (the first row shown, the broken image, had none): then edit it.
    page.wait_for_function("() => document.querySelector('#review-caption textarea').value !== ''")
    page.locator("#review-caption textarea").fill("an odd name, captioned by hand")
    page.click("#review-save")
    status_says(page, "Saved: edit =odd.png.")
    page.get_by_text("Change the captions shown, all at once").click()
    page.locator("#review-text input, #review-text textarea").first.fill("holiday, ")
    page.click("#review-preview")
    page.wait_for_function("() => document.querySelector('#review-preview-text').innerText.includes('would change')")
    assert "4 of 5 captions shown would change" in page.locator("#review-preview-text").inner_text()
    page.click("#review-apply")
    status_says(page, "Applied: prefix 'holiday, ' on 4 captions")
    assert axe_violations(page) == [], "review tab, after a bulk edit"
    page.click("#review-undo")
    status_says(page, "Undone: prefix")

    page.reload()
    page.get_by_role("tab", name="Review").click()
    status_says(page, "back as you left it")
    table = page.locator("#review-table").inner_text()
    assert "an odd name, captioned by hand" in table and "holiday, " not in table

    page.click("#review-export")
    status_says(page, "Exported: 4 images with captions")
    link = page.locator("#review-download a").first.get_attribute("href")
    exported = page.request.get(link if link.startswith("http") else page.url.split("/?")[0].rstrip("/") + link)
    with zipfile.ZipFile(io.BytesIO(exported.body())) as packed:
        rows = [json.loads(line) for line in packed.read("metadata.jsonl").decode().splitlines()]
        packed.extractall(tmp_path / "exported")
    assert {r["file_name"]: r["text"] for r in rows}["=odd.png"] == "an odd name, captioned by hand"
    assert {r["file_name"]: r["text"] for r in rows}["beach.jpg"] == "my words for the beach"
    assert axe_violations(page) == [], "review tab, after an export"
    # The export is a training set as it is: datasets reads exactly the reviewed captions, and
    # `captioner train --data` takes it for a short epoch.
    import datasets

    from captioner.cli import main

    loaded = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "exported"), split="train")
    assert sorted(loaded["text"]) == sorted(r["text"] for r in rows) and len(rows) == 4
    scores_without_java(monkeypatch)
    assert main(["train", "--data", str(tmp_path / "exported"), "--output", str(tmp_path / "tuned"), "--model",
                 str(tiny_checkpoint), "--epochs", "1", "--batch-size", "2", "--workers", "0"]) == 0
    assert (tmp_path / "tuned" / "config.json").is_file()


def test_the_review_flow_with_the_keyboard_alone(page, tmp_path):
    """Load a set, show the rows flagged "repeated", edit the one shown, undo, export: keys only."""
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as packed:
        for i, name in enumerate(["dog.png", "cat.png"]):
            packed.writestr(name, encode(photo(i, (40, 30))))
        packed.writestr("dog.txt", "a dog dog on the grass")  # repeats a word: flagged
        packed.writestr("cat.txt", "a cat asleep on a warm sofa")
    page.wait_for_function("() => document.querySelector('#review-counts').innerText.includes('No set loaded yet')")
    page.locator("#review-files").focus()  # the tab's first control; Tab from here as a person would
    tab_to(page, "#review-files button")
    chooser = choose_file(page)
    chooser.set_files(str(archive))
    upload(page, archive, given=True)
    tab_to(page, "#review-load")
    page.keyboard.press("Enter")
    status_says(page, "every image already has a caption")
    tab_to(page, "#review-flag input")
    page.keyboard.type("repeated")
    page.wait_for_function("""() => { const box = document.querySelector('#review-flag input');
        const active = document.getElementById(box.getAttribute('aria-activedescendant') || '');
        return active && active.getAttribute('aria-label').startsWith('repeated'); }""")  # the list has caught up
    page.keyboard.press("Enter")
    page.wait_for_function("() => !document.querySelector('#review-table').innerText.includes('asleep')")
    tab_to(page, "#review-caption textarea")
    assert page.locator("#review-caption textarea").input_value() == "a dog dog on the grass"
    page.keyboard.press("Control+A")
    page.keyboard.type("a dog on the grass")
    tab_to(page, "#review-save")
    page.keyboard.press("Enter")
    status_says(page, "Saved: edit dog.png.")
    tab_to(page, "#review-undo")
    page.keyboard.press("Enter")
    status_says(page, "Undone: edit dog.png.")
    tab_to(page, "#review-export")
    page.keyboard.press("Enter")
    status_says(page, "Exported: 2 images with captions")


def test_a_folder_upload_keeps_its_sub_folders_in_the_browser(page, tmp_path):
    """The browser sends a folder's files by base name only; the page sends their paths with Load."""
    folder = tmp_path / "holiday"
    for inside, data in {"day 1/a.jpg": encode(photo(1, (40, 30)), "JPEG"), "day 1/a.txt": b"the first a",
                         "day 2/a.jpg": encode(photo(2, (40, 30)), "JPEG"), "day 2/a.txt": b"the second a",
                         "c.png": encode(photo(3, (40, 30))), "notes.pdf": b"%PDF"}.items():
        (folder / inside).parent.mkdir(parents=True, exist_ok=True)
        (folder / inside).write_bytes(data)
    page.wait_for_function("() => document.querySelector('#review-counts').innerText.includes('No set loaded yet')")
    page.locator("#review-folder input[type=file]").set_input_files(str(folder))
    # The list shows each name's stem and suffix apart ("notes", ".pdf"): wait for the last one picked.
    page.wait_for_function("() => document.querySelector('#review-folder').innerText.includes('.pdf')")
    page.click("#review-load")
    status_says(page, "captioned 1 of 1")
    assert "2 captions kept as they were; 1 file that is not an image left out" in page.locator(
        "#review-status").inner_text()
    page.locator("#review-search input, #review-search textarea").first.fill("the second a")
    page.keyboard.press("Enter")
    page.wait_for_function("() => !document.querySelector('#review-table').innerText.includes('the first a')")
    assert "day 2/a.jpg" in page.locator("#review-table").inner_text()
