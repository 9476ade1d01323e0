"""The test suite's fake Kubernetes API server in a process of its own, for the benchmark.

Run by :mod:`bench.m1_api`: ``python -m bench.fakeapi_proc --services N`` serves the
scenario's objects, writes one JSON line ``{"url": ...}``, then applies each JSON
object read from stdin (one per line) as a watch event and answers ``ok`` once it is
applied. Its own process, so that its threads do not share the benchmark's
interpreter (and kxds's GIL) as they would in process.
"""

from __future__ import annotations

import argparse
import json
import sys

from bench import scenario
from bench.m10 import fake_api


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--services", type=int, default=1000)
    args = p.parse_args()
    fakeapi = fake_api()
    api = fakeapi.FakeApi(history=100_000).start()
    try:
        for doc in scenario.documents(scenario.Spec(services=args.services)):
            api.apply(doc)
        print(json.dumps({"url": api.url}), flush=True)
        for line in sys.stdin:
            api.apply(json.loads(line))
            print("ok", flush=True)
    finally:
        api.stop()


if __name__ == "__main__":
    main()
