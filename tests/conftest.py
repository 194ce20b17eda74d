"""Shared fixtures: a tiny seeded ViT-GPT2 checkpoint, built and saved here, loaded by the real loader."""

import os

# huggingface_hub reads this at import time: no test may reach for the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Libraries that write these when first used (gradio's launch(), `import ray`): set once, for every test.
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "True"
os.environ["RAY_CLIENT_MODE"] = "0"
# Tests talk to 127.0.0.1 and ::1 only. Libraries that reach out on their own (Ray's head probes
# the cloud metadata address 169.254.169.254 and metadata.google.internal even with usage stats
# off) go through a proxy that is a closed loopback port, so they fail at once; this process and
# every process it starts (Ray's, torchrun's, the CLI's) inherit it. Loopback itself is direct.
for _name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
    os.environ[_name] = "http://127.0.0.1:9"
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost,::1"

import sys
from pathlib import Path

import pytest

from captioner import Captioner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from captioner.engine.random_models import save_random_checkpoint  # noqa: E402
from helpers import RunningApp, encode, photo  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    return save_random_checkpoint(tmp_path_factory.mktemp("tiny-vit-gpt2"), "tiny", seed=0)


@pytest.fixture(scope="session")
def captioner(tiny_checkpoint):
    return Captioner.from_pretrained(tiny_checkpoint)


@pytest.fixture
def photos():
    return [photo(seed) for seed in range(6)]


@pytest.fixture(scope="session")
def running_app(captioner):
    served = RunningApp(captioner)
    yield served
    served.close()


@pytest.fixture(autouse=True)
def environment_left_as_found():
    """A test that changes os.environ must put it back (monkeypatch does): the tests after it run
    in the environment they expect."""
    before = dict(os.environ)
    yield
    changed = {k for k in before.keys() | os.environ.keys()
               if before.get(k) != os.environ.get(k) and k != "PYTEST_CURRENT_TEST"}
    assert not changed, f"the test left these environment variables changed: {sorted(changed)}"


@pytest.fixture
def folder(tmp_path):
    """Photos, a nested folder, and the files a real folder holds besides: broken, empty, cut, text."""
    root = tmp_path / "photos"
    (root / "nested").mkdir(parents=True)
    for i in range(5):
        photo(i).save(root / f"p{i}.jpg")
    photo(9).save(root / "nested" / "q.png")
    (root / "nested" / "broken.jpg").write_bytes(b"not an image")
    (root / "empty.png").write_bytes(b"")
    (root / "cut.jpg").write_bytes(encode(photo(3), "JPEG")[:300])
    (root / "notes.txt").write_text("not an image: counted in a run's summary, never a row")
    return root


def pytest_collection_modifyitems(config, items):
    """The fine-tuning run, the longest test by far, first: in two test processes (`-n 2`), begun
    last it would leave the other process idle at the end. The rest keep the collected order."""
    items.sort(key=lambda item: "fine_tuned" not in getattr(item, "fixturenames", ()))
