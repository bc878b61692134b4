"""Load and looks from inside a test host (a network namespace), for the multi-host test.

Usage (through ``ip netns exec HOST python netload.py ...``):
    netload.py wait PROXY COUNT SECONDS          # until the proxy lists COUNT workers; prints their ids
    netload.py load PROXY MODEL IMAGE LOG SECONDS USERS
        # USERS clients in p2p mode and USERS in proxy mode, predicting IMAGE until LOG.stop exists or
        # SECONDS pass (at most 200,000 requests); one JSON line per request in LOG ({"t", "mode",
        # "worker" or "error", "seconds"}), and the proxy's rotation every 0.25 s ({"t", "rotation"})

Only the addresses given are ever asked, and every loop is bounded in time and in count.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.request
from pathlib import Path

from visionpool.client.aio import AsyncClient

# above what the test's SECONDS can send (6 clients on a 5 ms model: 450-550 a second here): a load that ran out
# of requests before the test was done made it wait for answers that never came (20,000 did, at 37 s)
MAX_REQUESTS = 200_000


def workers(proxy: str) -> list[str]:
    with urllib.request.urlopen(proxy + "/workers", timeout=2) as answer:
        return sorted(w["id"] for w in json.load(answer)["workers"])


def wait(proxy: str, count: int, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            listed = workers(proxy)
        except OSError:
            listed = []
        if len(listed) >= count:
            print(" ".join(listed))
            return 0
        time.sleep(0.1)
    print(f"the proxy at {proxy} did not list {count} workers in {seconds:g} s", file=sys.stderr)
    return 1


async def load(proxy: str, model: str, image: bytes, log: Path, seconds: float, users: int) -> int:
    stop_file, stop_at, sent = log.with_name(log.name + ".stop"), time.monotonic() + seconds, [0]
    with log.open("a", buffering=1) as out:

        def going() -> bool:
            return time.monotonic() < stop_at and sent[0] < MAX_REQUESTS and not stop_file.exists()

        async def user(mode: str) -> None:  # a client of its own: in p2p mode, its own worker from /lookup
            async with AsyncClient(proxy, mode=mode, model=model, timeout=20, retries=5) as client:
                while going():
                    sent[0] += 1
                    line: dict[str, object] = {"mode": mode}
                    started = time.monotonic()
                    try:
                        line["worker"] = (await client.predict(image)).worker_id
                    except Exception as error:  # every failure is what this load is here to count
                        line["error"] = f"{type(error).__name__}: {error}"
                    line["seconds"] = round(time.monotonic() - started, 3)
                    out.write(json.dumps({"t": time.monotonic(), **line}) + "\n")

        async def watch() -> None:
            while going():
                try:
                    rotation = await asyncio.to_thread(workers, proxy)
                except OSError as error:
                    rotation = [f"unreadable: {error}"]
                out.write(json.dumps({"t": time.monotonic(), "rotation": rotation}) + "\n")
                await asyncio.sleep(0.25)

        await asyncio.gather(watch(), *(user(mode) for mode in ("p2p", "proxy") for _ in range(users)))
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["wait"]:
        return wait(argv[1], int(argv[2]), float(argv[3]))
    if argv[:1] == ["load"]:
        proxy, model, image, log, seconds, users = argv[1:7]
        return asyncio.run(load(proxy, model, Path(image).read_bytes(), Path(log), float(seconds), int(users)))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
