"""`caption --ray`: the same job on Ray Data gives the same captions as the single-process path.

One local Ray (loopback only, usage stats off) serves the in-process tests; it starts once per
session and shuts down at the end. One test runs the CLI in a process of its own, which starts
its own local Ray as a user's command would.
"""

import ipaddress
import json
import os
import subprocess
import sys

import pytest

from captioner.cli import main
from helpers import SRC, photo


@pytest.fixture(scope="module")
def local_ray():
    with pytest.MonkeyPatch.context() as environment:  # put back for the modules after this one
        environment.setenv("RAY_USAGE_STATS_ENABLED", "0")
        # Without this, Ray on Linux turns 127.0.0.1 into the machine's network address.
        environment.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # Ray's workers inherit this process's environment: let them import the package as it does.
        environment.setenv("PYTHONPATH", os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")])))
        import ray

        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
        assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}, "Ray left loopback"
        yield ray
        ray.shutdown()


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for i in range(11):
        photo(i).save(folder / ("sub" if i % 4 == 0 else ".") / f"{i:02d}.png")
    (folder / "broken.jpg").write_bytes(b"no image here")
    return folder


@pytest.mark.slow
def test_ray_resumes_a_messy_folder_to_the_single_process_rows(local_ray, tiny_checkpoint, tmp_path):
    """One Ray run, since each starts its actors afresh: names that are not UTF-8 (they travel
    through Ray as bytes), junk that gives error rows, several captions an image, a prefix, and
    --resume after the first rows; the file must equal the single-process run's byte for byte."""
    from messy import messy_folder, read_rows

    root = tmp_path / "disk"
    good, bad = messy_folder(root)
    single, on_ray = tmp_path / "single.jsonl", tmp_path / "ray.jsonl"
    common = ["caption", "--model", str(tiny_checkpoint), "--batch-size", "3", "--num-captions", "2",
              "--prefix", "tok, ", str(root)]
    assert main([*common, "--output", str(single)]) == 1
    lines = single.read_text(encoding="utf-8").splitlines(keepends=True)
    on_ray.write_text("".join(lines[:5]), encoding="utf-8")
    assert main([*common, "--output", str(on_ray), "--resume", "--ray", "--actors", "2"]) == 1
    assert on_ray.read_text(encoding="utf-8") == single.read_text(encoding="utf-8")  # errors and order too
    written = read_rows(on_ray)
    assert sorted(row["path"] for row in written) == sorted(good + bad)
    for row in written:
        if row["path"] in good:
            assert len(row["captions"]) == 2 and all(c.startswith("tok, ") for c in row["captions"]), row
        else:
            assert row["error"], row


@pytest.mark.slow
def test_ray_parquet_dataset_equals_the_single_process_run(local_ray, tiny_checkpoint, tmp_path):
    import pyarrow.parquet as pq

    from helpers import dataset_file

    source = tmp_path / "data"
    source.mkdir()
    dataset_file(source / "train-00000.parquet")  # row groups of 3, one corrupt image
    dataset_file(source / "train-00001.parquet", count=4)
    single, on_ray = tmp_path / "single.parquet", tmp_path / "ray.parquet"
    common = ["caption", "--model", str(tiny_checkpoint), "--dataset", str(source), "--batch-size", "2"]
    assert main([*common, "--output", str(single)]) == 1
    assert main([*common, "--output", str(on_ray), "--ray", "--actors", "2"]) == 1
    assert pq.read_table(on_ray).equals(pq.read_table(single))
    assert pq.read_table(on_ray).num_rows == 11 and len(pq.read_table(on_ray).column("caption").drop_null()) == 9


@pytest.mark.slow
def test_cli_starts_its_own_local_ray(tiny_checkpoint, images, tmp_path):
    out = tmp_path / "sidecars"
    env = {**os.environ, "PYTHONPATH": SRC, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "captioner", "caption", "--model", str(tiny_checkpoint), str(images),
               "--sidecar", ".txt", "--output-dir"]
    single = main([*command[3:], str(out / "single")])  # the reference, in this process
    on_ray = subprocess.run([*command, str(out / "ray"), "--ray"], env=env, capture_output=True, text=True, timeout=300)
    assert single == 1 and on_ray.returncode == 1, on_ray.stderr[-3000:]
    captions = {p.relative_to(out / "single"): p.read_text() for p in (out / "single").rglob("*.txt")}
    assert len(captions) == 11
    assert {p.relative_to(out / "ray"): p.read_text() for p in (out / "ray").rglob("*.txt")} == captions


# Ray's own processes are the probe's descendants; a worker may end while they are looked at,
# and the other test process's Ray (and everything else on the machine) is none of this test's.
LISTENING_PROBE = """if True:
    import psutil
    from captioner.bulk.ray_data import start_ray
    ray, _ = start_ray()
    print(ray.util.get_node_ip_address())
    listening, looked_at = set(), 0
    for process in psutil.Process().children(recursive=True):
        try:
            listening |= {c.laddr.ip for c in process.net_connections("inet") if c.status == "LISTEN"}
            looked_at += 1
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass  # it ended while we looked: it listens on nothing now
    print(looked_at)
    print(sorted(listening))
"""


@pytest.mark.slow
def test_the_clis_local_ray_listens_on_loopback_only(tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-c", LISTENING_PROBE], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    node, looked_at, listening = done.stdout.strip().splitlines()[-3:]
    assert node == "127.0.0.1"
    assert int(looked_at) >= 2, done.stdout  # the GCS and the raylet at least
    addresses = [ipaddress.ip_address(a) for a in json.loads(listening.replace("'", '"'))]
    assert addresses and all((getattr(a, "ipv4_mapped", None) or a).is_loopback for a in addresses), listening
