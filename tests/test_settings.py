import dataclasses
import math

import pytest

from captioner import CaptionSettings, InvalidSettings
from captioner.settings import BOUNDS


def test_defaults_are_the_model_cards_call():
    kwargs = CaptionSettings().generate_kwargs()
    assert kwargs["max_length"] == 16 and kwargs["num_beams"] == 4
    assert kwargs["do_sample"] is False and kwargs["num_return_sequences"] == 1
    assert set(kwargs) == {"max_length", "num_beams", "do_sample", "num_return_sequences"}


def test_sampling_passes_its_knobs_and_beam_does_not():
    sample = CaptionSettings(strategy="sample", temperature=0.7, top_k=10, top_p=0.9).generate_kwargs()
    assert sample["do_sample"] and sample["temperature"] == 0.7 and sample["top_k"] == 10
    assert "temperature" not in CaptionSettings().generate_kwargs()


def test_optional_penalties_only_when_set():
    kwargs = CaptionSettings(repetition_penalty=1.3, no_repeat_ngram_size=2).generate_kwargs()
    assert kwargs["repetition_penalty"] == 1.3 and kwargs["no_repeat_ngram_size"] == 2


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_beams", 1000), ("num_beams", 0), ("max_length", 100000), ("max_length", -1),
        ("num_captions", 1000), ("temperature", math.nan), ("temperature", math.inf),
        ("temperature", 0.0), ("top_p", 0.0), ("top_k", -5), ("repetition_penalty", -1.0),
        ("seed", -2), ("num_beams", 2.5), ("num_beams", "4"), ("num_beams", True), ("temperature", None),
    ],
)
def test_bad_values_are_refused_naming_field_and_range(field, value):
    with pytest.raises(InvalidSettings) as info:
        CaptionSettings(**{field: value})
    message = str(info.value)
    low, high = BOUNDS[field]
    assert field in message and f"from {_plain(low)} to {_plain(high)}" in message


def _plain(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def test_unknown_strategy_is_refused():
    with pytest.raises(InvalidSettings, match="strategy"):
        CaptionSettings(strategy="nucleus")


def test_more_captions_than_beams_is_refused():
    with pytest.raises(InvalidSettings, match="num_captions"):
        CaptionSettings(num_beams=2, num_captions=3)
    with pytest.raises(InvalidSettings, match="greedy"):
        CaptionSettings(strategy="greedy", num_captions=2)


def test_from_values_accepts_integral_floats_and_rejects_fractions():
    settings = CaptionSettings.from_values({"num_beams": 3.0, "max_length": 20.0, "seed": ""})
    assert settings.num_beams == 3 and isinstance(settings.num_beams, int) and settings.seed is None
    with pytest.raises(InvalidSettings, match="num_beams"):
        CaptionSettings.from_values({"num_beams": 3.5})
    with pytest.raises(InvalidSettings, match="unknown setting"):
        CaptionSettings.from_values({"beams": 3})


def test_settings_are_hashable_and_replaceable():
    a = CaptionSettings()
    b = dataclasses.replace(a, num_beams=2)
    assert len({a, b, CaptionSettings()}) == 2


def test_random_seed_means_no_seed_wherever_it_comes_from():
    import argparse

    from captioner.arguments import add_settings_arguments, settings_from_arguments
    from captioner.settings import RANDOM_SEED, SETTING_NAMES, shown_default

    assert CaptionSettings(strategy="sample", seed=RANDOM_SEED).seed is None
    assert CaptionSettings(strategy="sample", seed=RANDOM_SEED) == CaptionSettings(strategy="sample")
    assert CaptionSettings.from_values({"seed": float(RANDOM_SEED)}).seed is None
    assert shown_default("seed") == RANDOM_SEED
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    assert [a.dest for a in parser._actions if a.dest != "help"] == list(SETTING_NAMES)
    args = parser.parse_args(["--strategy", "sample", "--seed", str(RANDOM_SEED)])
    assert settings_from_arguments(args) == CaptionSettings(strategy="sample")
    assert settings_from_arguments(parser.parse_args(["--seed", "7"])).seed == 7
