"""The Review tab: load a set (images, their caption files, zips), let the model caption only what
has no caption, read the weakest first, edit, bulk-edit with a preview, undo, and export.

Every handler takes the review's token (kept by the visitor's browser) and the table's view (sort,
flag, search), and gives back the redrawn table, so what is shown always comes from the saved
review. A review error is a gr.Error naming what to do; the server keeps serving.
"""

from __future__ import annotations

import functools
import inspect
from urllib.parse import quote

import gradio as gr

from ..errors import CaptionError
from ..quality import FLAGS
from ..review.edits import CASES, KINDS
from ..review.rows import Row
from .components import CaptionFiles
from .review_service import EXPORTS, PAGE_ROWS, UPLOAD_TYPES, ReviewService, bulk_edit, summary, view_rows

SORTS = {"weakest first": "flags", "score": "score", "name": "name", "caption": "caption"}
HEADERS = ["image", "file", "caption", "from", "score", "needs a look"]


def _errors_shown(function):
    """A review's CaptionError becomes the page's message (gr.Error); anything else stays loud."""
    if inspect.isgeneratorfunction(function):
        @functools.wraps(function)
        def generator(*args, **kwargs):
            try:
                yield from function(*args, **kwargs)
            except CaptionError as error:
                raise gr.Error(str(error), print_exception=False) from None
        return generator

    @functools.wraps(function)
    def plain(self, token, *args, **kwargs):
        # One change at a time to a review: these events run outside the queue, side by side.
        try:
            with self.reviews.lock(getattr(self.reviews, "token", None) or token):
                return function(self, token, *args, **kwargs)
        except CaptionError as error:
            raise gr.Error(str(error), print_exception=False) from None
    return plain


class ReviewTab:
    def __init__(self, reviews: ReviewService) -> None:
        self.reviews = reviews

    def draw(self, token: str, sort: str, flag: str, search: str, page=1, status: str = "",
             selected: str | None = None):
        """(table, summary, flag filter choices, image picker, status, the picked image's caption
        and picture) for one page of the current view; the picked image stays picked while shown."""
        token = getattr(self.reviews, "token", None) or token  # a folder's review has one token
        review = self.reviews.get(token)
        rows = view_rows(review, SORTS.get(sort, sort), flag, search)
        first = _first_row(page, len(rows))
        shown = rows[first : first + PAGE_ROWS]
        table = [self._table_row(token, review, row) for row in shown]
        counts = review.flag_counts()
        # Every flag, each with its count: the chosen value stays a choice when its count changes.
        choices = [("all", "all")] + [(f"{f} ({counts[f]})", f) for f in FLAGS]
        names = [r.name for r in shown]
        picked = selected if selected in names else (names[0] if names else None)
        picture = self.reviews.thumbnail(token, review, picked) if picked else None
        return (table, summary(review, len(rows), first), gr.update(choices=choices),
                gr.update(choices=names, value=picked), status, review.rows[picked].caption if picked else "", picture)

    def _table_row(self, token: str, review, row: Row) -> list:
        thumb = self.reviews.thumbnail(token, review, row.name)
        alt = "".join(c for c in (row.caption or row.name) if c not in "[]()\\`*_<>") or "photo"
        image = f"![{alt}](/gradio_api/file={quote(thumb)})" if thumb else "(no preview)"
        score = round(row.score, 3) if row.score is not None else None
        caption = row.caption if not row.error else f"(not captioned: {row.error})"
        return [image, row.name, caption, row.origin or "not yet", score, review.flag_text(row)]

    # ---- handlers -----------------------------------------------------------------------------
    @_errors_shown
    def load(self, files, folder_files, folder_paths, sort, flag, search, *settings):
        token, review, others = self.reviews.start(files, folder_files, folder_paths)
        names = [r.name for r in review.uncaptioned()]
        kept = len(review.rows) - len(names)
        note = (f"{kept} caption{' kept as it was' if kept == 1 else 's kept as they were'}; " if kept else "")
        note += (f"{others} file{' that is not an image' if others == 1 else 's that are not images'} left out; "
                 if others else "")
        yield token, *self.draw(token, sort, flag, search, 1, f"{note}captioning {len(names)} images...")
        for done in self.reviews.caption(token, review, names, settings):
            yield token, *self.draw(token, sort, flag, search, 1, f"{note}captioned {done} of {len(names)}")
        if not names:
            yield token, *self.draw(token, sort, flag, search, 1, f"{note}every image already has a caption")

    @_errors_shown
    def restore(self, token, sort, flag, search, page=1):
        own = getattr(self.reviews, "token", None)  # a folder's review is there before any Load
        if own:
            review = self.reviews.get(own)
            waiting = len(review.uncaptioned())
            note = (f"{waiting} image{'s have' if waiting != 1 else ' has'} no caption yet: the button above "
                    "captions them." if waiting else "Every image has a caption.")
            return self.draw(own, sort, flag, search, page, note)
        if not token:
            return [], "No set loaded yet.", gr.update(), gr.update(choices=[], value=None), "", "", None
        try:
            return self.draw(token, sort, flag, search, page, "Your review is back as you left it.")
        except CaptionError as error:  # gone from the server: an empty tab that says so, not an error box
            return [], str(error), gr.update(), gr.update(choices=[], value=None), "", "", None

    @_errors_shown
    def pick(self, token, name):
        token = getattr(self.reviews, "token", None) or token
        if not token or not name:
            return "", None
        review = self.reviews.get(token)
        if name not in review.rows:
            return "", None
        return review.rows[name].caption, self.reviews.thumbnail(token, review, name)

    def select(self, token, sort, flag, search, page, event: gr.SelectData):
        review = self.reviews.get(token)
        rows = view_rows(review, SORTS.get(sort, sort), flag, search)
        first = _first_row(page, len(rows))
        rows = rows[first : first + PAGE_ROWS]
        return rows[event.index[0]].name if event.index and event.index[0] < len(rows) else gr.update()

    @_errors_shown
    def save_edit(self, token, name, caption, sort, flag, search, page=1):
        review = self.reviews.get(token)
        if not name:
            raise CaptionError("Choose the image to edit first.")
        step = review.edit(name, caption or "")
        self.reviews.save(token, review)
        return self.draw(token, sort, flag, search, page, f"Saved: {step.label}.", selected=name)

    @_errors_shown
    def preview(self, token, kind, text, find, regex, case, sort, flag, search, page=1):
        """What the bulk edit would do to every row of the view, on any page (`page` is not needed)."""
        review = self.reviews.get(token)
        names = [r.name for r in view_rows(review, SORTS.get(sort, sort), flag, search)]
        result = review.preview(bulk_edit(kind, text, find, regex, case), names)
        lines = [f"**{result.changed} of {len(names)} captions shown would change.**"]
        lines += [f"- {name}: “{before}” → “{after}”" for name, before, after in result.samples]
        return "\n".join(lines)

    @_errors_shown
    def apply(self, token, kind, text, find, regex, case, sort, flag, search, page=1):
        review = self.reviews.get(token)
        names = [r.name for r in view_rows(review, SORTS.get(sort, sort), flag, search)]
        step = review.apply(bulk_edit(kind, text, find, regex, case), names)
        self.reviews.save(token, review)
        return *self.draw(token, sort, flag, search, page, f"Applied: {step.label}. Undo takes it back."), ""

    def undo(self, token, sort, flag, search, page=1):
        return self._history(token, sort, flag, search, page, back=True)

    def redo(self, token, sort, flag, search, page=1):
        return self._history(token, sort, flag, search, page, back=False)

    @_errors_shown
    def _history(self, token, sort, flag, search, page, back: bool):
        review = self.reviews.get(token)
        step = review.undo() if back else review.redo()
        self.reviews.save(token, review)
        return self.draw(token, sort, flag, search, page, f"{'Undone' if back else 'Redone'}: {step.label}.",
                         selected=step.before[0][0])

    @_errors_shown
    def recaption(self, token, sort, flag, search, page, *settings):
        review = self.reviews.get(token)
        names = [r.name for r in view_rows(review, SORTS.get(sort, sort), flag, search) if not r.error]
        for done in self.reviews.caption(token, review, names, settings, replace=True):
            yield self.draw(token, sort, flag, search, page, f"recaptioned {done} of {len(names)} (undo takes it back)")

    @_errors_shown
    def export(self, token, choice):
        path = self.reviews.export(token, choice)
        return path, f"Exported: {self.reviews.last_report}."


# The paths (and sizes) of the files picked in #review-folder, kept for Load: the upload box
# replaces its <input> as it redraws, so the paths are caught as they are picked, by a listener
# on the document.
FOLDER_PATHS_JS = """() => {
  document.addEventListener("change", (event) => {
    const input = event.target;
    if (input instanceof HTMLInputElement && input.type === "file" && input.closest("#review-folder")) {
      window.captionerFolderPaths = JSON.stringify(
        Array.from(input.files || []).map((f) => [f.webkitRelativePath || f.name, f.size]));
    }
  }, true);
}"""
SEND_FOLDER_PATHS_JS = """(...args) => { args[2] = window.captionerFolderPaths || "[]"; return args; }"""


def _first_row(page, total: int) -> int:
    """The first row of `page` (counted from 1), kept inside the view as it shrinks or grows."""
    pages = max(1, -(-total // PAGE_ROWS))
    return (min(max(int(page or 1), 1), pages) - 1) * PAGE_ROWS


def build_review_tab(demo: gr.Blocks, token: gr.BrowserState, reviews: ReviewService, setting_inputs: list,
                     max_file_mb: int, local: bool = False) -> None:
    """The tab's widgets and events, inside build_demo's Blocks. `token` names the visitor's
    review; it is kept by their browser, and is made outside the tabs, where it is read when the
    page loads (a component inside a tab not yet shown is not)."""
    tab = ReviewTab(reviews)
    gr.set_static_paths([str(reviews.root)])  # the thumbnails, by the review's unguessable token
    if local:
        where = "its metadata.jsonl" if getattr(reviews, "metadata", None) else "the caption file beside its image"
        gr.Markdown(f"Reviewing the folder {getattr(reviews, 'folder', '')}: every change is written to {where} "
                    "at once, and undo works after a restart. The settings are the first tab's.")
    else:
        gr.Markdown("Load a set, let the model caption what has no caption yet, fix what needs a look, "
                    "and export it for training or as alt text. Captions a set already has (a .txt beside "
                    "each image, or a metadata.jsonl/.csv) are kept. The settings are the first tab's.")
    files = CaptionFiles(file_count="multiple", file_types=UPLOAD_TYPES, elem_id="review-files", visible=not local,
                         label=f"Images, their caption files, or a .zip (up to {max_file_mb} MB an image)")
    # A folder's files reach the server by their base names only; the browser's paths inside the
    # folder are read when they are picked (FOLDER_PATHS_JS) and sent with Load, so sub-folders stay.
    folder_files = gr.File(file_count="directory", elem_id="review-folder", visible=not local,
                           label="Or a whole folder, with its sub-folders")
    folder_paths = gr.Textbox(visible=False, elem_id="review-folder-paths")
    load_button = gr.Button("Caption the images without a caption" if local else "Load and caption",
                            variant="primary", elem_id="review-load")
    status = gr.Markdown(elem_id="review-status")
    with gr.Row():
        sort = gr.Dropdown(list(SORTS), value="weakest first", label="Sort", elem_id="review-sort")
        flag = gr.Dropdown([("all", "all")] + [(f, f) for f in FLAGS], value="all", label="Show", elem_id="review-flag")
        search = gr.Textbox(label="Find in captions or names", elem_id="review-search", max_lines=1)
    with gr.Row():
        counts = gr.Markdown(elem_id="review-counts")
        page = gr.Number(1, precision=0, minimum=1, label=f"Page ({PAGE_ROWS} rows each)", elem_id="review-page",
                         scale=0, min_width=160)
    grid = gr.Dataframe(headers=HEADERS, datatype=["markdown", "str", "str", "str", "number", "str"], type="array",
                        interactive=False, wrap=True, label="Captions to review", elem_id="review-table",
                        column_widths=["96px", "18%", "36%", "9%", "8%", "20%"])
    with gr.Row():
        with gr.Column():
            picker = gr.Dropdown([], label="Image to edit", elem_id="review-pick")
            caption = gr.Textbox(label="Its caption", lines=2, elem_id="review-caption")
            with gr.Row():
                save = gr.Button("Save caption", elem_id="review-save")
                undo = gr.Button("Undo", elem_id="review-undo")
                redo = gr.Button("Redo", elem_id="review-redo")
        preview_image = gr.Image(label="The image", type="filepath", interactive=False, height=220,
                                 elem_id="review-image")
    with gr.Accordion("Change the captions shown, all at once", open=False, elem_id="review-bulk"):
        kind = gr.Radio(list(KINDS), value="prefix", label="Change", elem_id="review-kind")
        with gr.Row():
            find = gr.Textbox(label="Find (for replace)", max_lines=1, elem_id="review-find")
            text = gr.Textbox(label="Text to add, or the replacement", max_lines=1, elem_id="review-text")
        with gr.Row():
            regex = gr.Checkbox(label="Find is a regular expression", elem_id="review-regex")
            case = gr.Radio(list(CASES), value="lower", label="Case (for case)", elem_id="review-case")
        with gr.Row():
            preview = gr.Button("Preview", elem_id="review-preview")
            apply = gr.Button("Apply", variant="primary", elem_id="review-apply")
            recaption = gr.Button("Recaption the images shown", elem_id="review-recaption")
        preview_text = gr.Markdown(elem_id="review-preview-text")
    with gr.Row():
        export_kind = gr.Dropdown(list(EXPORTS), value=next(iter(EXPORTS)), label="Export as", elem_id="review-export-kind")
        export = gr.Button("Export", elem_id="review-export")
    export_file = gr.File(label="Download", elem_id="review-download")

    view = [token, sort, flag, search, page]
    drawn = [grid, counts, flag, picker, status, caption, preview_image]
    # What takes milliseconds runs outside the queue (its round trip was most of a sort's time);
    # what uses the model or writes a whole set stays in it.
    private = dict(api_visibility="private", queue=False)
    queued = dict(api_visibility="private")
    demo.load(None, js=FOLDER_PATHS_JS)
    load_button.click(tab.load, [files, folder_files, folder_paths, sort, flag, search, *setting_inputs],
                      [token, *drawn], js=SEND_FOLDER_PATHS_JS, concurrency_limit=1, concurrency_id="sets",
                      **queued)
    for control in (sort, flag):
        control.input(tab.draw, view, drawn, **private)
    search.submit(tab.draw, view, drawn, **private)
    page.submit(tab.draw, view, drawn, **private)
    picker.input(tab.pick, [token, picker], [caption, preview_image], **private)
    grid.select(tab.select, view, picker, **private)
    save.click(tab.save_edit, [token, picker, caption, *view[1:]], drawn, **private)
    caption.submit(tab.save_edit, [token, picker, caption, *view[1:]], drawn, **private)
    undo.click(tab.undo, view, drawn, **private)
    redo.click(tab.redo, view, drawn, **private)
    bulk_inputs = [token, kind, text, find, regex, case, *view[1:]]
    preview.click(tab.preview, bulk_inputs, preview_text, **private)
    apply.click(tab.apply, bulk_inputs, [*drawn, preview_text], **private)
    recaption.click(tab.recaption, [*view, *setting_inputs], drawn, concurrency_limit=1, concurrency_id="sets",
                    **queued)
    export.click(tab.export, [token, export_kind], [export_file, status], **queued)
    demo.load(tab.restore, view, drawn, **private)  # a reload finds the review as it was left
