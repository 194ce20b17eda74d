"""The quality flags every door shares: what earns each, and what must not."""

import pytest

from captioner.quality import FLAGS, caption_flags, describe, low_score_threshold, repeats, set_flags


@pytest.mark.parametrize("caption, repeated", [
    ("a man a man a man standing", "a man a man"),
    ("a dog dog running on the grass", "dog"),
    ("a kitchen with a stove and a stove", "a stove"),
    ("a bus bus bus", "bus"),
    ("a group of people next to a group of people", "a group of people"),
    ("a cat a dog a cat a dog", "a cat a dog"),
    ("pizza with cheese, pizza with ham and pizza", "pizza with"),
])
def test_repeats_are_found_and_named_by_the_longest_phrase(caption, repeated):
    assert repeats(caption)[0] == repeated
    assert caption_flags(caption) == ["repeated"]


@pytest.mark.parametrize("caption", [
    "a cat on a table in front of a window",  # "on a", "of a", "a ...": function words only
    "a man riding a wave on top of a surfboard",
    "a plate of food with a fork and a knife",
    "a red and white bus parked on the side of a street",
    "two dogs and two cats",  # a number word twice is not a repeated phrase
])
def test_ordinary_captions_are_not_flagged(caption):
    assert repeats(caption) == [] and caption_flags(caption) == []


def test_empty_short_and_error_flags():
    assert caption_flags("") == ["empty"] and caption_flags("   ") == ["empty"] and caption_flags(None) == ["empty"]
    assert caption_flags("a dog") == ["short"]
    assert caption_flags("dog dog") == ["short", "repeated"]
    assert caption_flags("a cat on a sofa", error="not an image") == ["error"]  # an error says it all


def test_duplicates_ignore_case_spacing_and_end_punctuation():
    flags = set_flags(["A red bus.", "a red  bus", "a red bus parked", None, "a red bus"],
                      errors=[None, None, None, "corrupt", "corrupt"])
    assert flags == [["duplicate"], ["duplicate"], [], ["error"], ["error"]]  # errors share nothing


def test_low_score_is_the_lowest_tenth_once_the_set_is_large_enough():
    captions = [f"a photo of thing number {i} on a table" for i in range(20)]
    scores = [-0.1 * i for i in range(20)]  # the lowest: -1.9, -1.8
    flags = set_flags(captions, scores)
    assert [i for i, f in enumerate(flags) if "low_score" in f] == [18, 19]
    assert low_score_threshold(scores[:9]) is None  # too few scores to call any "low"
    assert not any("low_score" in f for f in set_flags(captions[:9], scores[:9]))
    assert not any("low_score" in f for f in set_flags(captions, [None] * 20))


def test_flags_come_in_one_order_and_read_as_words():
    flags = set_flags(["dog dog"] * 2)
    assert flags == [["short", "repeated", "duplicate"]] * 2
    assert all(f in FLAGS for f in flags[0])
    assert describe(flags[0], duplicates=1) == "very short; repeats words; the same caption as 1 other image"
    assert describe(["duplicate"], duplicates=3) == "the same caption as 3 other images"
