"""The page's accessibility: a theme whose colours pass WCAG AA, visible focus, announcements, and
the few fixes gradio's own components need, all in one place.

What axe-core (WCAG 2.0-2.2, A and AA) found on gradio 6.31's defaults, and where it is fixed:
- colour contrast: the primary buttons (white on orange-500, 2.8:1) and the secondary text ("or"
  in the upload box, slider bounds, the footer; #bbbbc2 on white, 1.9:1). Fixed in THEME: buttons
  on orange-700/800 (5.2:1 and up), secondary text neutral-600 (7.7:1).
- unnamed example buttons: fixed where they are made (ui.py passes `example_labels`).
- gradio's File component puts `aria-label` on a plain div in its empty state
  (aria-prohibited-attr); the dismiss button of its inline validation message, and the File
  component's "upload more" icon, are buttons inside buttons (nested-interactive), the inner one
  doing the work; its small icon buttons are under 24 px (target-size, WCAG 2.2). The head script
  removes the one attribute and turns each outer button into a span; CSS sets the minimum size.
  Upstream: gradio-app/gradio, components/file and the status tracker; gated on the gradio version
  these were seen in, so a newer gradio is audited before the fix is applied to it.
Announcements: a screen reader hears each caption (a polite live region) and each error (an
assertive one) without hunting for them; the caption box itself is a textarea, whose value changes
are not announced.
"""

from __future__ import annotations

import logging

import gradio as gr

log = logging.getLogger("captioner.app.accessibility")
FIXED_IN = ("6.31",)  # gradio versions whose components HEAD_SCRIPT's fixes were written against

THEME = gr.themes.Default(primary_hue="orange").set(
    button_primary_background_fill="*primary_700",
    button_primary_background_fill_hover="*primary_800",
    button_primary_background_fill_dark="*primary_700",
    button_primary_background_fill_hover_dark="*primary_800",
    button_primary_text_color="white",
    button_primary_text_color_dark="white",
    body_text_color_subdued="*neutral_600",
    body_text_color_subdued_dark="*neutral_300",
)

CSS = """
.visually-hidden { position: absolute !important; width: 1px; height: 1px; margin: -1px; padding: 0;
  overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; border: 0; }
:is(button, a, input, textarea, select, [tabindex]):focus-visible {
  outline: 3px solid #1d4ed8 !important; outline-offset: 2px !important; }
/* WCAG 2.2 target size: gradio's small icon buttons are 16-18 px. */
button.icon-button, button.upload-container.icon-mode { min-width: 24px; min-height: 24px; }
"""

_ANNOUNCER = """
(() => {
  const region = (id, role, politeness) => {
    let el = document.getElementById(id);
    if (!el) {
      el = document.createElement("div");
      el.id = id;
      el.className = "visually-hidden";
      el.setAttribute("role", role);
      el.setAttribute("aria-live", politeness);
      el.setAttribute("aria-atomic", "true");
      document.body.appendChild(el);
    }
    return el;
  };
  // A live region must exist before its text changes, or screen readers may stay silent.
  const ready = () => { region("caption-announcer", "status", "polite"); region("error-announcer", "alert", "assertive"); };
  window.captionerAnnounce = (text, urgent) => {
    const el = region(urgent ? "error-announcer" : "caption-announcer", urgent ? "alert" : "status",
                      urgent ? "assertive" : "polite");
    el.textContent = "";
    setTimeout(() => { el.textContent = text; }, 50);  // the same text twice is announced twice
  };
  const seen = new WeakSet();
  const watch = () => {
    ready();
    for (const error of document.querySelectorAll('[data-testid="toast-body"].error, .validation-error')) {
      if (!seen.has(error) && error.textContent.trim()) {
        seen.add(error);
        window.captionerAnnounce(error.textContent.trim().replace(/\\s+/g, " "), true);
      }
    }
    %(GRADIO_FIXES)s
  };
  // gradio may add this script after the document has loaded.
  const start = () => new MutationObserver(watch).observe(document.body, {subtree: true, childList: true, characterData: true});
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
"""

_GRADIO_FIXES = """
    // gradio 6.31's File component: aria-label on a div without a role (its empty state).
    document.querySelectorAll("div.empty[aria-label]:not([role])").forEach(el => el.removeAttribute("aria-label"));
    // gradio 6.31 puts a button inside a button twice: the dismiss button of an inline validation
    // message, and the "upload more" icon of the File component (named with an untranslated
    // "common.upload"). In both the inner button does the work, so the outer one becomes a span.
    document.querySelectorAll("button button").forEach(inner => {
      const outer = inner.parentElement.closest("button");
      const span = document.createElement("span");
      span.className = outer.className;
      while (outer.firstChild) span.appendChild(outer.firstChild);
      outer.replaceWith(span);
      if (inner.matches(".upload-container")) inner.setAttribute("aria-label", "Add more files");
    });
"""

ANNOUNCE_CAPTION_JS = "(text) => { if (text) window.captionerAnnounce('Caption: ' + text, false); return []; }"


def head_script() -> str:
    """The page's <head> script: the announcers always; the fixes to gradio's components only on
    the gradio versions they were written for (logged either way)."""
    version = ".".join(gr.__version__.split(".")[:2])
    fixes = version in FIXED_IN
    log.info("accessibility fixes for gradio %s: %s", gr.__version__,
             "applied" if fixes else f"not applied (written for gradio {', '.join(FIXED_IN)}; audit this version)")
    return "<script>" + _ANNOUNCER.replace("%(GRADIO_FIXES)s", _GRADIO_FIXES if fixes else "") + "</script>"


def page_options() -> dict:
    """The launch() settings that make the page accessible (gradio 6 takes them in launch())."""
    return dict(theme=THEME, css=CSS, head=head_script())
