"""The review model: a person's caption is never replaced unasked, every change undoes exactly,
bulk edits preview what they apply, and the state survives a trip through JSON."""

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from captioner.review import BulkEdit, ReviewError, ReviewSet, Row


def review_set():
    return ReviewSet([
        Row("a.jpg", "/x/a.jpg", "a cat on a sofa", "existing"),
        Row("b.jpg", "/x/b.jpg"),
        Row("sub/c.jpg", "/x/sub/c.jpg"),
        Row("d.jpg", "/x/d.jpg", error="not an image"),
        Row("e.jpg", "/x/e.jpg", "=cmd|' /C calc'!A0", "edited"),
    ])


def captions(review):
    return {name: (row.caption, row.origin) for name, row in review.rows.items()}


def test_the_model_captions_only_what_nobody_captioned():
    review = review_set()
    assert [r.name for r in review.uncaptioned()] == ["b.jpg", "sub/c.jpg"]
    model = {name: (f"model says {name}", -0.5) for name in review.rows if name != "d.jpg"}
    review.set_model_captions(model)
    assert captions(review)["a.jpg"] == ("a cat on a sofa", "existing")  # the person's caption stays
    assert captions(review)["e.jpg"] == ("=cmd|' /C calc'!A0", "edited")
    assert captions(review)["b.jpg"] == ("model says b.jpg", "model") and review.rows["b.jpg"].score == -0.5
    assert review.uncaptioned() == [] and review.steps == []  # a first draft is no step to undo
    assert review.rows["d.jpg"].caption == "" and review.rows["d.jpg"].flags == ["error"]


def test_recaption_replaces_only_when_asked_and_can_be_undone():
    review = review_set()
    step = review.set_model_captions({"a.jpg": ("a dog", -1.0)}, replace=True)
    assert step.label == "recaption 1 image" and captions(review)["a.jpg"] == ("a dog", "model")
    review.undo()
    assert captions(review)["a.jpg"] == ("a cat on a sofa", "existing")


def test_edit_undo_redo_and_a_new_edit_ends_the_redo_branch():
    review = review_set()
    before = captions(review)
    review.edit("a.jpg", "a grey cat on a sofa")
    review.edit("b.jpg", "a person's own caption")
    assert captions(review)["b.jpg"] == ("a person's own caption", "edited")
    assert review.undo().label == "edit b.jpg" and review.undo().label == "edit a.jpg"
    assert captions(review) == before
    with pytest.raises(ReviewError, match="nothing to undo"):
        review.undo()
    review.redo()
    assert captions(review)["a.jpg"] == ("a grey cat on a sofa", "edited")
    review.edit("e.jpg", "a spreadsheet cell")
    with pytest.raises(ReviewError, match="nothing to redo"):
        review.redo()
    with pytest.raises(ReviewError, match="could not be read"):
        review.edit("d.jpg", "anything")
    with pytest.raises(ReviewError, match="no image named"):
        review.edit("missing.jpg", "anything")


def test_a_bulk_prefix_is_previewed_then_applied_as_one_step():
    review = review_set()
    review.set_model_captions({"b.jpg": ("a red bus", None), "sub/c.jpg": ("tok, a tree", None)})
    edit = BulkEdit("prefix", text="tok, ")
    preview = review.preview(edit)
    assert preview.changed == 3  # c.jpg has it already; d.jpg has no caption; both left alone
    assert ("b.jpg", "a red bus", "tok, a red bus") in preview.samples
    assert captions(review)["b.jpg"] == ("a red bus", "model")  # a preview changes nothing
    step = review.apply(edit)
    assert step.label == "prefix 'tok, ' on 3 captions" and len(step.after) == 3
    assert all(r.caption.startswith("tok, ") for r in review.rows.values() if not r.error)
    assert review.rows["b.jpg"].origin == "edited"
    review.undo()
    assert captions(review)["b.jpg"] == ("a red bus", "model") and captions(review)["sub/c.jpg"][0] == "tok, a tree"
    with pytest.raises(ReviewError, match="changes no caption"):
        review.apply(BulkEdit("replace", find="zebra", text="horse"))


def test_bulk_edits_on_chosen_rows_only():
    review = review_set()
    review.apply(BulkEdit("case", case="upper"), names=["a.jpg"])
    assert captions(review)["a.jpg"][0] == "A CAT ON A SOFA" and captions(review)["e.jpg"][0].startswith("=cmd")


@pytest.mark.parametrize("edit, before, after", [
    (BulkEdit("suffix", text=", photo"), "a cat", "a cat, photo"),
    (BulkEdit("suffix", text=", photo"), "a cat, photo", "a cat, photo"),
    (BulkEdit("replace", find="cat", text="kitten"), "a cat and a cat", "a kitten and a kitten"),
    (BulkEdit("replace", find="(", text="["), "a (cat)", "a [cat)"),  # plain text: no pattern
    (BulkEdit("replace", find=r"\b(\w+) \1\b", text=r"\1", regex=True), "a dog dog runs", "a dog runs"),
    (BulkEdit("replace", find=r"(?P<n>\d+)", text=r"#\g<n>", regex=True), "2 cats", "#2 cats"),
    (BulkEdit("trim"), "  a  cat \t on a sofa ", "a cat on a sofa"),
    (BulkEdit("case", case="lower"), "A Cat", "a cat"),
    (BulkEdit("case", case="sentence"), " a cat", " A cat"),
])
def test_each_bulk_edit(edit, before, after):
    assert edit.apply(before) == after


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="replace", find="(cat", regex=True), r"'\(cat' is not a valid regular expression: missing \) at position 4"),
    (dict(kind="replace", find="(cat)", text=r"\2", regex=True), "the pattern has no group 2"),
    (dict(kind="replace", find="(cat)", text=r"\g<name>", regex=True), "the pattern has no group 'name'"),
    (dict(kind="replace", find="cat", text="dog\\", regex=True), "lone backslash"),
    (dict(kind="replace", find="", text="x"), "type what to find first"),
    (dict(kind="prefix"), "type the prefix to add first"),
    (dict(kind="case", case="title"), "case is one of lower, upper, sentence"),
    (dict(kind="delete"), "a bulk edit is one of"),
])
def test_a_bad_bulk_edit_is_one_clear_message(kwargs, message):
    with pytest.raises(ReviewError, match=message):
        BulkEdit(**kwargs)


def test_a_pattern_that_backtracks_for_ever_is_stopped():
    review = ReviewSet([Row(f"{i}.jpg", f"/x/{i}.jpg", "a" * 40 + "!", "existing") for i in range(50)])
    started = time.monotonic()
    with pytest.raises(ReviewError, match="took too long"):
        review.preview(BulkEdit("replace", find=r"(a|aa)+$", text="x", regex=True))
    assert time.monotonic() - started < 30  # bounded for the whole set, not per caption
    assert all(r.caption.endswith("!") for r in review.rows.values())


def test_sort_filter_and_counts_put_the_weakest_first():
    rows = [Row(f"{i:02d}.jpg", f"/x/{i}.jpg", f"a photo of a thing called number {i}", "model", score=-0.1 * i)
            for i in range(12)]
    rows += [Row("dup1.jpg", "/x/d1", "a red bus", "model", -0.2), Row("dup2.jpg", "/x/d2", "A red bus.", "existing"),
             Row("rep.jpg", "/x/r", "dog dog", "model", -0.3), Row("bad.jpg", "/x/b", error="corrupt")]
    review = ReviewSet(rows)
    counts = review.flag_counts()
    assert counts == {"error": 1, "empty": 0, "short": 1, "repeated": 1, "duplicate": 2, "low_score": 2}
    weakest = review.view("flags")
    assert weakest[0].name == "rep.jpg"  # two flags
    assert [r.name for r in review.view("flags", flag="low_score")] == ["11.jpg", "10.jpg"]
    assert [r.name for r in review.view("name", search="RED")] == ["dup1.jpg", "dup2.jpg"]
    assert review.view("score")[0].name == "11.jpg"
    assert review.flag_text(review.rows["dup1.jpg"]) == "the same caption as 1 other image"
    review.edit("11.jpg", "a photo I wrote myself of number eleven")
    assert "low_score" not in review.rows["11.jpg"].flags  # the model's score no longer speaks for it
    with pytest.raises(ReviewError, match="sort by one of"):
        review.view("size")
    with pytest.raises(ReviewError, match="filter by one of"):
        review.view(flag="blurry")


def test_the_state_survives_json_and_undo_still_works():
    review = review_set()
    review.set_model_captions({"b.jpg": ("a red bus", -0.25)})
    review.edit("a.jpg", "a cat, edited")
    review.apply(BulkEdit("suffix", text=" (photo)"))
    review.undo()
    again = ReviewSet.from_state(json.loads(json.dumps(review.to_state())))
    assert captions(again) == captions(review) and again.rows["b.jpg"].score == -0.25
    again.redo()
    assert again.rows["b.jpg"].caption == "a red bus (photo)"
    again.undo()
    again.undo()
    assert captions(again)["a.jpg"] == ("a cat on a sofa", "existing")
    with pytest.raises(ReviewError, match="not one this version can read"):
        ReviewSet.from_state({"rows": [{"nom": "x"}], "steps": [], "position": 0})
    with pytest.raises(ReviewError, match="out of range"):
        ReviewSet.from_state({**review.to_state(), "position": 99})


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["edit", "prefix", "replace", "undo", "redo"]),
                          st.integers(0, 4), st.text(max_size=8)), max_size=25))
def test_undoing_everything_gives_back_the_start_whatever_was_done(actions):
    review = review_set()
    start = captions(review)
    names = list(review.rows)
    for action, index, text in actions:
        try:
            if action == "edit":
                review.edit(names[index], text)
            elif action == "prefix":
                review.apply(BulkEdit("prefix", text=text or "p"))
            elif action == "replace":
                review.apply(BulkEdit("replace", find=text or "a", text="Z"))
            else:
                getattr(review, action)()
        except ReviewError:
            pass  # nothing to undo, an image that cannot be edited, an edit that changes nothing
    while review.position:
        review.undo()
    assert captions(review) == start
