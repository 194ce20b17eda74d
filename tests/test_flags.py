"""Every flag of every command, and every training data format, tried as people get them wrong.

Property tests generate argument lists (values in and out of range, typos, stray text) and
malformed data files, and hold each command to one rule: exit 0 (or 1: some image failed) with
output, or exit 2 with one line on stderr; never a traceback.
"""

import contextlib
import io
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from captioner import Captioner
from captioner.cli import main
from captioner.train.cli import SCHEDULERS
from captioner.train.data import load_dataset
from captioner.errors import CaptionError
from helpers import encode, photo, scores_without_java

EVERYDAY_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
NUMBERS = st.sampled_from(["0", "1", "2", "-1", "3.5", "1e3", "nan", "inf", "", " 4 ", "abc", "0x10", "9" * 30])
SETTING_VALUES = {
    "--strategy": st.sampled_from(["beam", "greedy", "sample", "Beam", "bean", ""]),
    "--max-length": st.sampled_from(["2", "5", "64", "65", "1", "-5", "ten"]),
    "--num-beams": st.sampled_from(["1", "2", "8", "9", "0"]),
    "--temperature": st.sampled_from(["0.05", "1", "5", "0", "-1", "nan"]),
    "--top-k": st.sampled_from(["0", "50", "1001", "-1"]),
    "--top-p": st.sampled_from(["0.5", "1", "1.5", "0"]),
    "--repetition-penalty": st.sampled_from(["1", "2.5", "0.5", "4"]),
    "--no-repeat-ngram-size": st.sampled_from(["0", "3", "7", "-1"]),
    "--num-captions": st.sampled_from(["1", "2", "9", "0"]),
    "--seed": st.sampled_from(["0", "7", "-1", str(2**32), "x"]),
}
CAPTION_VALUES = {
    **SETTING_VALUES,
    "--batch-size": NUMBERS,
    "--max-file-mb": st.sampled_from(["1", "20", "0", "2000", "-3"]),
    "--max-megapixels": st.sampled_from(["1", "50", "0", "1001"]),
    "--dtype": st.sampled_from(["float32", "int8", "fp32", ""]),
    "--prefix": EVERYDAY_TEXT,
    "--existing": st.sampled_from(["skip", "append", "keep"]),
    "--actors": NUMBERS,
    # Only values that write nothing: the property runs many times over one folder.
    "--output": st.sampled_from(["captions.txt", "", "/", "metadata.json"]),
    "--sidecar": st.sampled_from([".png", "", "/x", ".JPG"]),
    "--from-list": st.sampled_from(["/no/such/list.txt", ""]),
    "--dataset": st.sampled_from(["/no/such.parquet", ""]),
    "--output-dir": st.sampled_from(["/tmp"]),
}
TRAIN_VALUES = {
    "--epochs": st.sampled_from(["1", "0.5", "0", "-1", "nan", "1001", "x"]),
    "--batch-size": st.sampled_from(["1", "4", "0", "-2", "1.5"]),
    "--learning-rate": st.sampled_from(["1e-4", "0", "-1", "2", "fast"]),
    "--gradient-accumulation": st.sampled_from(["1", "2", "0"]),
    "--warmup-ratio": st.sampled_from(["0", "0.1", "1", "-0.1"]),
    "--scheduler": st.sampled_from(["linear", "cosine", "constant", "cosin", ""]),
    "--validation-share": st.sampled_from(["0", "0.25", "1", "-0.5"]),
    "--max-target-length": st.sampled_from(["8", "1", "2000"]),
    "--seed": st.sampled_from(["0", "-1", "x"]),
    "--workers": st.sampled_from(["0", "-1", "65"]),
    "--encoder": st.sampled_from(["/no/such/encoder"]),
    "--report-to": st.sampled_from(["none", "wandb"]),
}
TYPOS = st.sampled_from(["--batchsize", "--epoch", "--num_beams", "-x", "--", "--model=", "--max-length=",
                         "--json=yes", "--output"])


def arguments(values: dict) -> st.SearchStrategy[list[str]]:
    """Some flags with generated values, sometimes a typo, in any order."""
    flag = st.sampled_from(sorted(values)).flatmap(lambda name: values[name].map(lambda value: [name, value]))
    extra = st.one_of(st.just([]), TYPOS.map(lambda typo: [typo]), EVERYDAY_TEXT.map(lambda text: [text]))
    return st.tuples(st.lists(flag, max_size=4), extra).map(lambda parts: [a for pair in parts[0] for a in pair] + parts[1])


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def assert_the_rule(code: int, out: str, err: str) -> None:
    assert "Traceback" not in err
    if code == 2:
        lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and "image/s" not in line]
        assert len(lines) == 1, err  # the one line, below any progress bar
    else:
        assert code in (0, 1) and out.strip(), (code, out, err)


@pytest.fixture(scope="module")
def cached_loader(tiny_checkpoint):
    """Captioner.from_pretrained, loading each (model, dtype, limits) once for the whole module."""
    loaded, real = {}, Captioner.from_pretrained.__func__

    def from_pretrained(cls, source=None, **options):
        key = (str(source), repr(sorted(options.items())))
        if key not in loaded:
            loaded[key] = real(cls, source, **options)
        return loaded[key]

    Captioner.from_pretrained = classmethod(from_pretrained)
    yield
    Captioner.from_pretrained = classmethod(real)


@pytest.fixture(scope="module")
def two_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("two-images")
    photo(1, (24, 24)).save(folder / "a.png")
    (folder / "b.jpg").write_bytes(b"not a photo")
    return folder


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=arguments(CAPTION_VALUES))
def test_caption_answers_any_flags_with_output_or_one_line(cached_loader, tiny_checkpoint, two_images, argv):
    assert_the_rule(*run(["caption", "--model", str(tiny_checkpoint), "--json", str(two_images), *argv]))


@pytest.fixture(scope="module")
def tiny_imagefolder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imagefolder")
    rows = []
    for i in range(4):
        photo(i, (32, 32)).save(folder / f"{i}.png")
        rows.append(json.dumps({"file_name": f"{i}.png", "text": f"a photo number {i}"}))
    (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return folder


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=arguments(TRAIN_VALUES))
def test_train_answers_any_flags_with_output_or_one_line(tiny_checkpoint, tiny_imagefolder, argv):
    with tempfile.TemporaryDirectory() as output:
        base = ["train", "--data", str(tiny_imagefolder), "--output", output, "--model", str(tiny_checkpoint),
                "--workers", "0", "--epochs", "1", "--batch-size", "2"]
        code, out, err = run([*base, *argv])
        assert_the_rule(code, out, err)
        if code == 0:
            assert json.loads(out.strip().splitlines()[-1])["train_examples"] >= 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=arguments(SETTING_VALUES))
def test_evaluate_answers_any_flags_with_output_or_one_line(cached_loader, tiny_checkpoint, tiny_imagefolder, argv):
    # The flags are tested, not the scores: without the JVM that METEOR starts on every run.
    with tempfile.TemporaryDirectory() as output, pytest.MonkeyPatch.context() as patch:
        scores_without_java(patch)
        base = ["evaluate", "--data", str(tiny_imagefolder), "--model", str(tiny_checkpoint), "--json",
                "--output", str(Path(output) / "scores.csv")]
        assert_the_rule(*run([*base, *argv]))


@settings(max_examples=80, deadline=None)
@given(argv=arguments({
    "--port": st.sampled_from(["1", "7860", "65535", "0", "70000", "-1", "http"]),
    "--max-batch-size": NUMBERS, "--queue-size": NUMBERS, "--max-images": NUMBERS,
    "--max-file-mb": NUMBERS, "--max-megapixels": NUMBERS,
    "--dtype": st.sampled_from(["float32", "int8", "float64"]),
    "--model": st.sampled_from(["/no/such/folder", "./relative/missing", "bad id!"]),
}))
def test_app_flags_are_checked_before_the_model_loads(running_app, argv):
    import app

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = app.parse_args(argv)
        except SystemExit as done:
            assert done.code == 2 and len(err.getvalue().strip().splitlines()) == 1, err.getvalue()
            assert err.getvalue().startswith("app.py: error: ")
            return
    assert 1 <= args.port <= 65535 and 1 <= args.max_batch_size <= 256 and args.queue_size >= 1
    assert 1 <= args.max_file_mb <= 1024 and 1 <= args.max_megapixels <= 1000 and args.max_images >= 1


def test_the_usage_errors_people_make_are_one_line_each(tiny_checkpoint, tiny_imagefolder, tmp_path):
    data, model = str(tiny_imagefolder), str(tiny_checkpoint)
    train = ["train", "--data", data, "--output", str(tmp_path / "out"), "--workers", "0"]
    cases = {
        ("--encoder", model): "--encoder and --decoder go together",
        ("--batch-size", "0"): "argument --batch-size: must be an integer from 1 to 4096; got 0",
        ("--epochs", "-1"): "argument --epochs: must be a number above 0 and at most 1000; got -1",
        ("--model", str(tmp_path / "missing")): "argument --model: model directory",
        ("--scheduler", "cosin"): "argument --scheduler: invalid choice: 'cosin'",
        ("--output", str(tiny_imagefolder / "0.png")): "argument --output: must be a folder",
    }
    for extra, message in cases.items():
        code, out, err = run([*train, *extra])
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, (extra, err)


def test_the_scheduler_list_is_transformers_own():
    from transformers import SchedulerType

    assert SCHEDULERS == tuple(kind.value for kind in SchedulerType)


# --- training data files, as they arrive broken -----------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | EVERYDAY_TEXT
    | st.sampled_from(["a.png", "b.png", "missing.png", "a cat", ""]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["file_name", "text", "caption", "images", "annotations", "id", "image_id", "data",
                         "image_name", "caption_str", "x"]), inner, max_size=5),
    max_leaves=12,
)
MALFORMED = {
    "metadata.jsonl": st.lists(st.one_of(JSON_VALUES.map(json.dumps), EVERYDAY_TEXT), max_size=6).map("\n".join),
    "metadata.csv": st.lists(st.lists(st.one_of(EVERYDAY_TEXT, st.sampled_from(["file_name", "text", "a.png", '"'])),
                                      max_size=3).map(",".join), max_size=5).map("\n".join),
    "captions_train.json": st.one_of(JSON_VALUES.map(json.dumps), EVERYDAY_TEXT, st.builds(
        lambda images, annotations: json.dumps({"images": images, "annotations": annotations}),
        st.lists(JSON_VALUES, max_size=3), st.lists(JSON_VALUES, max_size=3))),
    "captions.token.txt": st.lists(st.one_of(EVERYDAY_TEXT, st.sampled_from(["a.png#0\ta cat", "b.png#1", "\t"])),
                                   max_size=5).map("\n".join),
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(MALFORMED)), data=st.data(), as_bytes=st.binary(max_size=40), raw=st.booleans())
def test_a_broken_data_file_is_a_dataset_or_one_line(tmp_path, name, data, as_bytes, raw):
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    for image in ("a.png", "b.png"):
        (folder / image).write_bytes(encode(photo(1, (8, 8))))
    content = as_bytes if raw else data.draw(MALFORMED[name]).encode("utf-8", "surrogatepass")
    (folder / name).write_bytes(content)
    try:
        dataset = load_dataset(folder)
    except CaptionError as error:
        assert "\n" not in str(error) and str(error)
        return
    assert dataset.examples and all(example.caption.strip() for example in dataset.examples)


@pytest.mark.parametrize("content, message", [
    (b'{"images": [], "annotations": [}', "captions_train.json is not valid JSON: Expecting value at line 1, column 32"),
    (b"\xff\xfe{}", "captions_train.json is not UTF-8 text (byte 0)"),
    (b"[1, 2]", "is not COCO captions"),
    (b'{"images": [{"id": 1, "file_name": "gone.png"}], "annotations": [{"image_id": 1, "caption": "x"}]}',
     "1 missing image file"),
])
def test_train_and_evaluate_name_the_broken_file_in_one_line(tiny_checkpoint, tmp_path, content, message):
    (tmp_path / "captions_train.json").write_bytes(content)
    for command in (["train", "--output", str(tmp_path / "out"), "--workers", "0"],
                    ["evaluate", "--output", str(tmp_path / "scores.csv")]):
        code, out, err = run([*command, "--data", str(tmp_path), "--model", str(tiny_checkpoint)])
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_a_metadata_csv_without_its_columns_says_which_it_has(tmp_path):
    (tmp_path / "metadata.csv").write_text("image,description\na.png,a cat\n")
    with pytest.raises(CaptionError, match=r"metadata.csv needs the columns file_name and text \(it has: image, description\)"):
        load_dataset(tmp_path)


def test_a_missing_optional_package_names_the_requirements_file_that_brings_it(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "datasets" else real(name, *a))
    (tmp_path / "train.parquet").write_bytes(b"PAR1")
    with pytest.raises(CaptionError, match=r"^Training on Parquet needs the datasets package: "
                                           r"pip install -r requirements-train.txt$"):
        load_dataset(tmp_path)


def test_train_takes_its_model_from_captioner_model_like_every_other_command(tiny_checkpoint, tmp_path, monkeypatch):
    from captioner.train.training import TrainConfig, load_model_for_training

    monkeypatch.setenv("CAPTIONER_MODEL", str(tiny_checkpoint))
    model, _, _ = load_model_for_training(TrainConfig(output=str(tmp_path / "out")))
    assert model.config.encoder.hidden_size == json.loads((tiny_checkpoint / "config.json").read_text())["encoder"]["hidden_size"]
    monkeypatch.setenv("CAPTIONER_MODEL", str(tmp_path / "no-such-model"))
    with pytest.raises(CaptionError, match="model directory '.*no-such-model' does not exist"):
        load_model_for_training(TrainConfig(output=str(tmp_path / "out")))


@pytest.mark.parametrize("flag, value, message", [
    ("--max-file-mb", "0", "argument --max-file-mb: must be an integer from 1 to 1024; got 0"),
    ("--port", "70000", "argument --port: must be an integer from 1 to 65535; got 70000"),
])
def test_app_py_as_a_person_starts_it_answers_a_typo_in_one_line(flag, value, message):
    import subprocess
    import sys

    from helpers import SRC

    root = Path(SRC).parent
    done = subprocess.run([sys.executable, str(root / "app.py"), flag, value], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stderr == f"app.py: error: {message} (see --help)\n"
