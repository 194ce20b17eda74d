"""How long one visitor's photo waits while another visitor's set of images is being captioned.

Starts app.py in a fresh process on the full-size random checkpoint (every caption 16 tokens,
beam 4), then talks to it with gradio_client on loopback: a single photo's latency with the app
otherwise idle (median of --singles), and the same request sent --delay seconds after a
--set-size image /caption_many began (median of --tries). Prints both, their ratio, and how long
each set took, with and without the photo beside it.

    python bench/fairness.py                                   # full size, 32-image sets, 3 tries
    python bench/fairness.py --size tiny --set-size 8 --tries 1   # a quick check of the script
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

from load import launch_app, loopback_client
from paths import build_checkpoint, build_images
from report import machine_name


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "full"], default="full")
    parser.add_argument("--set-size", type=int, default=32)
    parser.add_argument("--singles", type=int, default=5)
    parser.add_argument("--tries", type=int, default=3)
    parser.add_argument("--delay", type=float, default=2.0, help="seconds after the set starts")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    from gradio_client import handle_file

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        checkpoint = build_checkpoint(work, args.size)
        images = build_images(work, args.set_size + 1)
        single, members = handle_file(images[0]), [handle_file(p) for p in images[1:]]
        process, url = launch_app(["--model", str(checkpoint)], work / "app.log")
        try:
            client = loopback_client(url)
            client.predict(single, api_name="/caption")  # warm-up: first-call costs are not a visitor's wait
            alone = [timed(lambda: client.predict(single, api_name="/caption")) for _ in range(args.singles)]
            set_alone = timed(lambda: client.predict(members, api_name="/caption_many"))  # what sharing costs a set
            during, sets = [], []
            for _ in range(args.tries):
                set_client = loopback_client(url)  # another visitor: a session of its own
                finished = threading.Event()

                def caption_set() -> None:
                    sets.append(timed(lambda: set_client.predict(members, api_name="/caption_many")))
                    finished.set()

                threading.Thread(target=caption_set, daemon=True).start()
                time.sleep(args.delay)
                during.append(timed(lambda: client.predict(single, api_name="/caption")))
                finished.wait()
        finally:
            process.terminate()
            process.wait(timeout=60)
    result = {
        "machine": machine_name("cpu"), "checkpoint": args.size, "set_size": args.set_size,
        "alone_s": [round(t, 2) for t in alone], "during_set_s": [round(t, 2) for t in during],
        "set_s": [round(t, 2) for t in sets], "set_alone_s": round(set_alone, 2),
        "ratio": round(statistics.median(during) / statistics.median(alone), 2),
    }
    print(f"{result['machine']}, {args.size} checkpoint")
    print(f"a photo alone:            median {statistics.median(alone):.2f} s  {result['alone_s']}")
    print(f"the same during a set of {args.set_size}: median {statistics.median(during):.2f} s  {result['during_set_s']}")
    print(f"ratio {result['ratio']}x (each set took {result['set_s']} s; one alone {result['set_alone_s']} s)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
