"""bench/speed.py end to end on the tiny checkpoint: it runs, and what it reports is consistent.

A smoke run of the script's code paths (baseline, Captioner, two app servers paused in turn, int8),
not a speed measurement: the numbers it prints for the tiny model mean nothing.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "speed.py"


@pytest.mark.slow
def test_speed_bench_smoke_run_reports_every_path():
    done = subprocess.run(
        [sys.executable, str(BENCH), "--size", "tiny", "--rounds", "2", "--images", "3", "--single", "2",
         "--requests", "6", "--clients", "3"],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    runs = report["runs"]
    names = list(runs)
    assert names[0].startswith("baseline") and len(names) == 5
    direct, app, direct_int8, app_int8 = (runs[n] for n in names[1:])
    assert "float32" in names[1] and "float32" in names[2] and "int8" in names[3] and "int8" in names[4]
    # The default mode is exact: the core and the app give the model card's captions.
    assert direct["equal_to_baseline"] == 1.0 and app["equal_to_baseline"] == 1.0
    assert direct["agreement_with_default"] == 1.0 and app["agreement_with_default"] == 1.0
    assert 0.0 <= app_int8["agreement_with_default"] <= 1.0
    for run in runs.values():
        assert run["images_per_s"] > 0 and run["latency_s"] > 0
        assert len(run["throughput_x_baseline_per_round"]) == 2
    # Every app request went through a batch the queue formed, 6 per round.
    for app_run in (app, app_int8):
        assert sum(int(size) * count for size, count in app_run["batch_sizes"].items()) == 12
        assert app_run["peak_rss_mb"] > 100 and app_run["cold_start_s"] > 0
        assert "app_overhead_throughput" in app_run
    assert app["images"] == app_int8["images"] == 12
    for app_run in (app, app_int8):  # steady state where a round had one, else the whole round
        assert 0 < app_run["measured_images"] <= app_run["images"]
        assert app_run["whole_round_images_per_s"] > 0
    for batched in (direct, direct_int8):  # at least two copies of the 3 images per round
        assert batched["images"] >= 12
        assert sum(int(size) * count for size, count in batched["batch_sizes"].items()) == batched["images"]


def test_steady_window_leaves_out_the_first_and_last_batch():
    from speed import steady_window  # bench/ is on sys.path (conftest.py)

    # Batches of 2, 3, 3 and 1, one after another; answers arrive unordered from the client threads.
    answered_at = [1.0, 1.01, 4.0, 4.02, 4.01, 7.5, 7.52, 7.51, 9.0]
    assert steady_window(list(reversed(answered_at)), [2, 3, 3, 1]) == pytest.approx((6, 7.52 - 1.01))
    assert steady_window(answered_at[:5], [2, 3]) is None  # no batch between the first and the last
    assert steady_window(answered_at, [2, 3, 3]) is None  # the log and the answers disagree
