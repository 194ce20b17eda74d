import json
import threading
from pathlib import Path

import pytest

from captioner import CaptionSettings, Captioner, ModelLoadError
from helpers import photo
from reference import ModelCardReference

BEAM = CaptionSettings()
GREEDY = CaptionSettings(strategy="greedy")
SAMPLED = CaptionSettings(strategy="sample", seed=11, top_k=0)


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    return ModelCardReference(tiny_checkpoint)


def texts(results):
    return [captions[0].text for captions in results]


def test_default_captions_equal_the_model_cards_code(captioner, reference, photos):
    ours = texts(captioner.caption(photos))
    theirs = [reference.predict([image])[0] for image in photos]
    assert ours == theirs
    assert len(set(ours)) > 1  # the images really are told apart


@pytest.mark.parametrize(
    "settings, kwargs",
    [
        (GREEDY, {"max_length": 16, "num_beams": 1, "do_sample": False}),
        (CaptionSettings(num_beams=3, max_length=12), {"max_length": 12, "num_beams": 3}),
        (CaptionSettings(no_repeat_ngram_size=2, repetition_penalty=1.5),
         {"max_length": 16, "num_beams": 4, "no_repeat_ngram_size": 2, "repetition_penalty": 1.5}),
    ],
)
def test_other_settings_equal_stock_generate(captioner, reference, photos, settings, kwargs):
    assert texts(captioner.caption(photos[:3], settings)) == [reference.predict([i], **kwargs)[0] for i in photos[:3]]


def test_seeded_sampling_equals_stock_generate_with_that_seed(captioner, reference, photos):
    ours = texts(captioner.caption(photos[:3], SAMPLED))
    theirs = [reference.predict([i], seed=11, do_sample=True, top_k=0, max_length=16)[0] for i in photos[:3]]
    assert ours == theirs


@pytest.mark.parametrize("settings", [BEAM, GREEDY, SAMPLED], ids=["beam", "greedy", "sample"])
def test_batched_captions_equal_one_by_one(captioner, photos, settings):
    batched = texts(captioner.caption(photos, settings))
    alone = [texts(captioner.caption([image], settings))[0] for image in photos]
    assert batched == alone


def test_batch_with_mixed_settings_matches_each_request_alone(captioner, photos):
    mix = [BEAM, GREEDY, SAMPLED, CaptionSettings(num_beams=2), BEAM, GREEDY]
    batched = texts(captioner.caption(photos, mix))
    alone = [texts(captioner.caption([image], settings))[0] for image, settings in zip(photos, mix)]
    assert batched == alone


def test_large_batches_are_split_at_max_batch_size(tiny_checkpoint, photos):
    small = Captioner.from_pretrained(tiny_checkpoint, max_batch_size=4)
    results = small.caption(photos * 2)
    assert len(results) == 12 and dict(small.generate_batch_sizes) == {4: 3}


def test_several_captions_come_best_first_with_scores(captioner, photos):
    for settings in [CaptionSettings(num_captions=3), CaptionSettings(strategy="sample", num_captions=3, seed=1)]:
        results = captioner.caption(photos[:2], settings)
        for captions in results:
            scores = [c.score for c in captions]
            assert len(captions) == 3 and all(s is not None and s <= 0 for s in scores)
            assert scores == sorted(scores, reverse=True)


def test_unseeded_sampling_varies(captioner, photos):
    settings = CaptionSettings(strategy="sample", top_k=0, temperature=2.0)
    draws = {texts(captioner.caption([photos[0]], settings))[0] for _ in range(5)}
    assert len(draws) > 1


def test_concurrent_callers_get_their_own_captions(captioner, photos):
    expected = texts(captioner.caption(photos))
    results: dict[int, str] = {}

    def call(index):
        results[index] = texts(captioner.caption([photos[index]]))[0]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(photos)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [results[i] for i in range(len(photos))] == expected


def test_accepts_paths_bytes_and_odd_modes(captioner, tmp_path):
    image = photo(3)
    path = tmp_path / "x.png"
    image.save(path)
    expected = texts(captioner.caption([image]))[0]
    assert texts(captioner.caption([path, str(path), path.read_bytes()])) == [expected] * 3
    assert len(captioner.caption([photo(4, mode="CMYK"), photo(5, mode="LA"), photo(6, mode="P")])) == 3


def test_missing_directory_gives_a_clear_message(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        Captioner.from_pretrained(str(tmp_path / "nowhere") + "/")


def test_directory_without_checkpoint_gives_a_clear_message(tmp_path):
    with pytest.raises(ModelLoadError, match="not a saved captioning checkpoint.*CAPTIONER_MODEL"):
        Captioner.from_pretrained(tmp_path)


def test_other_model_type_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ModelLoadError, match="not a vision-encoder-decoder"):
        Captioner.from_pretrained(tmp_path)


def test_unreachable_hub_model_says_what_to_do():
    with pytest.raises(ModelLoadError) as info:
        Captioner.from_pretrained("nlpconnect/vit-gpt2-image-captioning")
    assert "nlpconnect/vit-gpt2-image-captioning" in str(info.value) and "CAPTIONER_MODEL" in str(info.value)


def test_environment_variable_picks_the_model(tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("CAPTIONER_MODEL", str(tiny_checkpoint))
    assert Captioner.from_pretrained().source == str(tiny_checkpoint)


def test_feature_extractor_named_config_still_loads(tiny_checkpoint, tmp_path, photos):
    # The real checkpoint's preprocessor_config.json names the removed ViTFeatureExtractor.
    import shutil

    copy = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    config_path = copy / "preprocessor_config.json"
    config = json.loads(config_path.read_text())
    config.pop("image_processor_type", None)
    config["feature_extractor_type"] = "ViTFeatureExtractor"
    config_path.write_text(json.dumps(config))
    loaded = Captioner.from_pretrained(copy)
    assert texts(loaded.caption(photos[:2])) == texts(Captioner.from_pretrained(tiny_checkpoint).caption(photos[:2]))


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux's /proc/self/maps")
@pytest.mark.parametrize("dtype, native", [("float32", "1"), ("float32", "0"), ("int8", "1")])
def test_a_sped_up_model_keeps_no_mapping_of_its_checkpoint(tiny_checkpoint, tmp_path, monkeypatch, dtype, native):
    # Every weight still pointing into the memory-mapped checkpoint keeps the file pages of all
    # the replaced ones resident (speedups.own_weights).
    import shutil

    from captioner.engine import native as native_kernel

    monkeypatch.setenv(native_kernel.SWITCH_ENV_VAR, native)
    native_kernel.linear_kernel.cache_clear()  # it reads the switch once per process
    copy = shutil.copytree(tiny_checkpoint, tmp_path / "unmapped")
    try:
        loaded = Captioner.from_pretrained(copy, dtype=dtype)
    finally:
        native_kernel.linear_kernel.cache_clear()
    expected_kind = "int8" if dtype == "int8" else {"1": "native", "0": "onednn"}[native]
    assert loaded.speedups.linear_kind == expected_kind
    assert loaded.caption([photo(1)])[0][0].text
    assert str(copy) not in Path("/proc/self/maps").read_text()


def test_the_log_has_no_false_warning_about_padding_for_a_batch_of_images(captioner, photos):
    import logging

    from transformers.utils import logging as transformers_logging

    from captioner.engine import inference

    generation_log = logging.getLogger("transformers.generation.utils")
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    generation_log.addHandler(handler)
    (no_padding_filter,) = [f for f in generation_log.filters if isinstance(f, inference._NoPaddingToMask)]
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_warning()  # as in the app; the CLI, tested earlier, sets "error"
    try:
        logging.Logger.warning_once.cache_clear()  # transformers logs it once per process
        captioner.caption(photos[:2], CaptionSettings(max_length=6, num_beams=2))
        assert not [r for r in records if "attention mask" in r]
        generation_log.removeFilter(no_padding_filter)  # the same batch without the filter: it is there
        logging.Logger.warning_once.cache_clear()
        captioner.caption(photos[:2], CaptionSettings(max_length=6, num_beams=2))
        assert [r for r in records if r.startswith("The attention mask is not set with a batched input")]
    finally:
        transformers_logging.set_verbosity(verbosity)
        generation_log.addFilter(no_padding_filter)
        generation_log.removeHandler(handler)
