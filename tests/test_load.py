"""A small bounded run of bench/load.py against the launched app: nothing lost, nothing hangs."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from load import run_load  # noqa: E402

from captioner.app.ui import example_photos  # noqa: E402


@pytest.mark.slow
def test_concurrent_load_every_request_answered(running_app, captioner):
    images = example_photos()
    expected = {c[0].text for c in captioner.caption(images)}
    report = run_load(running_app.url, images, clients=16, requests=48, deadline_s=240, request_timeout_s=120)
    assert report["answered"] == 48 and report["lost"] == 0 and report["timeout"] == 0
    assert report["error"] == 0, report["errors"]
    assert report["ok"] + report["busy"] == 48 and report["ok"] > 0
    assert report["latency_p99_s"] is not None and report["latency_p50_s"] <= report["latency_p99_s"]
    assert set(report["distinct_captions"]) <= expected  # every answer is one of the core's captions
