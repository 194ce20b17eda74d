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
TURNS = 6  # each path's turns in the throughput blocks (the benchmark's own default is far more)


@pytest.mark.slow
def test_speed_bench_smoke_run_reports_every_path():
    done = subprocess.run(
        [sys.executable, str(BENCH), "--size", "tiny", "--rounds", "2", "--images", "3", "--single", "2",
         "--turns", str(TURNS), "--blocks", "2", "--clients", "3"],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    runs = report["runs"]
    names = list(runs)
    assert names[0].startswith("baseline: model card code, fresh process") and len(names) == 6
    base, in_run, direct, app, direct_int8, app_int8 = (runs[n] for n in names)
    assert "this benchmark's process" in names[1]
    assert "float32" in names[2] and "float32" in names[3] and "int8" in names[4] and "int8" in names[5]
    # The baseline is two fresh processes running the model card's code, taking turns.
    assert len(report["baseline_processes_s_per_image"]) == 2 and min(report["baseline_processes_s_per_image"]) > 0
    # The default mode is exact: the core, the app and the in-process reference give the model card's captions.
    assert direct["equal_to_baseline"] == 1.0 and app["equal_to_baseline"] == 1.0 and in_run["equal_to_baseline"] == 1.0
    assert direct["agreement_with_default"] == 1.0 and app["agreement_with_default"] == 1.0
    assert in_run["measured_images"] == TURNS and in_run["throughput_x_baseline"] > 0
    # int8 is not exact: its agreement is measured, a share of the 3 images compared.
    for int8 in (direct_int8, app_int8):
        assert int8["agreement_with_default"] in {0.0, 0.3333, 0.6667, 1.0}
    for run in runs.values():
        assert run["latency_s"] > 0 and len(run["throughput_x_baseline_per_block"]) == 2
    # The baseline captions one image a turn, Captioner.caption one full batch: TURNS per precision.
    assert base["measured_images"] == 2 * TURNS and base["images_per_s"] > 0
    for batched in (direct, direct_int8):
        assert batched["batch_sizes"] == {"8": TURNS} and batched["measured_images"] == 8 * TURNS
        assert batched["images_per_s"] > 0
    for app_run in (app, app_int8):
        # Every request the busy clients made went through a batch the queue formed; the steady
        # state leaves out at least the first batch.
        answered = sum(int(size) * count for size, count in app_run["batch_sizes"].items())
        assert 0 <= app_run["measured_images"] < answered
        assert app_run["peak_rss_mb"] > 100 and app_run["cold_start_s"] > 0
        assert "app_overhead_throughput" in app_run and len(app_run["app_overhead_throughput_per_block"]) == 2
        # The same single requests sent as the page sends them get the same captions.
        assert app_run["page_latency_s"] > 0 and "app_overhead_page_latency" in app_run
    assert app["page_equal_to_baseline"] == 1.0


def test_agreement_is_the_share_of_equal_captions():
    from report import agreement

    assert agreement(["a dog", "a cat", "a car"], ["a dog", "a cow", "a car"]) == 2 / 3
    assert agreement(["a dog"], ["a cat"]) == 0.0
    assert agreement([], []) is None


def test_running_clock_counts_only_the_turns_a_path_was_let_run():
    from speed import RunningClock  # bench/ is on sys.path (conftest.py)

    clock = RunningClock()
    clock.add(10.0, 12.0)
    clock.add(20.0, 23.0)
    assert [clock.at(t) for t in (5.0, 11.0, 15.0, 21.0, 30.0)] == pytest.approx([0.0, 1.0, 2.0, 3.0, 5.0])
    assert [clock.turn_of(t) for t in (11.0, 15.0, 99.0)] == [0, 1, 1]


def test_the_app_window_leaves_out_its_first_batch_and_what_ended_after_the_clients_stopped():
    from speed import RunningClock, batch_ends, steady_blocks

    clock = RunningClock()
    for began, ended in [(0.0, 10.0), (20.0, 30.0), (40.0, 50.0)]:  # three turns; paused between
        clock.add(began, ended)
    batches = [2, 3, 3, 3, 1]
    answered_at = [1.0, 1.01, 5.0, 5.01, 5.02, 25.0, 25.01, 25.02, 45.0, 45.01, 45.02, 55.0]
    ends = batch_ends(list(reversed(answered_at)), batches)  # answers arrive unordered
    assert ends == [1.01, 5.02, 25.02, 45.02, 55.0]
    # Turns 0 and 1 are block 0, turn 2 block 1; the clients stopped asking at 50.
    blocks = steady_blocks(ends, batches, clock, 50.0, [0, 0, 1])
    assert [images for images, _ in blocks] == [3 + 3, 3]
    # Running seconds from the end of the batch before: 5.02 - 1.01, then 10 of the 14.98 between
    # 5.02 and 25.02 (the pause is not counted), then 10 again.
    assert [seconds for _, seconds in blocks] == pytest.approx([4.01 + 10.0, 10.0])
    with pytest.raises(SystemExit, match="12 answers"):
        batch_ends(answered_at, [2, 3])  # the server's log and the answers disagree
