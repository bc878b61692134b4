"""``visionpool chaos``: attack a pool the way bad clients and bad luck do, and report what it did to everybody else.

Usage:
    visionpool chaos --url http://127.0.0.1:8080                       # every scenario against the proxy
    visionpool chaos --url http://127.0.0.1:8080 --target worker --scenarios slow-uploads,idle
    visionpool chaos --url http://127.0.0.1:8080 --scenarios kill --json chaos.json

Each scenario runs ``--clients`` normal clients (closed loop, real photos) for ``--seconds``
alone, then again while the attack runs, and prints what it sent, what came back, the normal
clients' p50/p99 before and during, and whether any of their requests failed:

    slow-uploads   connections that promise 100 KB and send one byte a second
    slow-headers   connections that send their request head one byte a second
    idle           kept-alive connections that say nothing (reopened when the server closes them)
    oversized      bodies over the server's limit: time to 413, ejections, the next request's answer
    fuzz           broken images (bit flips, cuts, inserted bytes, wrong Content-Type, every format):
                   the answers by status (any 5xx fails), the worker's memory before and after
    bombs          images built to make a decoder work far beyond their size (a JPEG of 5,000 empty scans,
                   countless JPEG comments, PNG chunks, GIF extensions, TIFF strips, a 40-megapixel RLE BMP
                   of 5 KB, EPS): each must be refused (400)
    flood          connections opened and closed as fast as they go
    kill           SIGKILL, then SIGTERM, of a worker on this machine under load through the proxy:
                   failed requests, and the proxy's retry counter (proof one was in flight)

Every loop is bounded in count and time, and only addresses of this machine are attacked
(loopback, or an address a socket here can bind: the pool's own test hosts).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import random
import signal
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from visionpool.client.wire import HEALTHZ, METRICS, WORKERS, predict_path
from visionpool.serving.commands import command
from visionpool.serving.options import option
from visionpool.tools.loadgen import Measurement, closed_loop, on_this_machine, sample_images

SCENARIOS = ("slow-uploads", "slow-headers", "idle", "oversized", "fuzz", "bombs", "flood", "kill", "auth")
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
MAX_CONNECTIONS = 5_000  # no scenario opens more, whatever it is asked


@dataclass
class Report:
    """One scenario: what it sent, what came back, and what the normal clients saw before and during."""

    scenario: str
    sent: str
    answers: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    before: dict[str, Any] = field(default_factory=dict)
    during: dict[str, Any] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        rise = _rise(self.before.get("p50_ms"), self.during.get("p50_ms"))
        out = [f"== {self.scenario}: {self.sent}", f"   answers: {dict(sorted(self.answers.items())) or '-'}"]
        if self.before:
            out.append(
                f"   normal clients: p50 {self.before['p50_ms']} -> {self.during['p50_ms']} ms ({rise}), "
                f"p99 {self.before['p99_ms']} -> {self.during['p99_ms']} ms, "
                f"errors {self.before['errors']} -> {self.during['errors']}"
            )
        out += [f"   {key}: {value}" for key, value in self.notes.items()]
        out.append("   FAILED: " + "; ".join(self.failed) if self.failed else "   ok")
        return out


def local_only(url: str) -> None:
    """Refuse any target that is not this machine: loopback, or an address a socket here can bind."""
    if not on_this_machine(url):
        raise ValueError(f"{url} is not on this machine: chaos only attacks this machine's addresses")


class Chaos:
    """The scenarios, against one target URL (a proxy, or a worker)."""

    def __init__(self, args: ChaosSettings) -> None:
        self.url = args.url.rstrip("/")
        self.proxy: str | None = None  # the proxy, when --url is one
        self.target = self.url
        self.model, self.seconds, self.clients = args.model, args.seconds, args.clients
        self.args = args
        self.images = sample_images(args.images)
        self.path = predict_path(self.model)

    async def run(self, scenarios: list[str]) -> list[Report]:
        with contextlib.suppress(aiohttp.ClientError, ValueError, KeyError, TimeoutError):
            await self._a_worker(self.url)  # only a proxy lists workers
            self.proxy = self.url
        if self.args.target == "worker" and self.proxy is not None:
            self.target = await self._a_worker(self.proxy)
        reports = []
        for name in scenarios:
            attack: Callable[[], Awaitable[Report]] = getattr(self, "_" + name.replace("-", "_"))
            reports.append(await attack())
            for line in reports[-1].lines():
                print(line, flush=True)
        return reports

    async def _normal(self, during: Awaitable[Any] | None = None) -> dict[str, Any]:
        """The normal clients for --seconds, alongside ``during`` (an attack) when given."""
        load = closed_loop(
            "normal", self.target, "proxy", self.model, self.images, self.clients, self.seconds, 1.0,
            api_key=self.args.api_key,
        )  # fmt: skip
        if during is None:
            measured: Measurement = await load
        else:
            measured, _ = await asyncio.gather(load, during)
        return measured.row(0.0)

    async def _under(self, attack: Callable[[float], Awaitable[None]], report: Report) -> Report:
        report.before = await self._normal()
        report.during = await self._normal(attack(self.seconds + 1.0))
        if report.during["errors"]:
            report.failed.append(f"{report.during['errors']} normal requests failed during the attack")
        return report

    async def _slow_uploads(self) -> Report:
        count = min(self.args.slow, MAX_CONNECTIONS)
        report = Report("slow-uploads", f"{count} uploads promising 100 KB, one byte a second")
        head = self._head("Content-Length: 100000\r\nContent-Type: image/jpeg\r\n")
        return await self._under(lambda seconds: self._trickle(count, head, b"x", seconds, report), report)

    async def _slow_headers(self) -> Report:
        count = min(self.args.slow, MAX_CONNECTIONS)
        report = Report("slow-headers", f"{count} request heads, one byte a second")
        head = self._head("Content-Type: image/jpeg\r\nContent-Length: 10\r\nX-Padding: " + "p" * 200 + "\r\n")
        return await self._under(lambda seconds: self._trickle(count, b"", head, seconds, report), report)

    async def _trickle(self, count: int, first: bytes, drip: bytes, seconds: float, report: Report) -> None:
        """``count`` connections sending ``first``, then ``drip`` one byte a second; what each one got back."""

        async def one(index: int) -> str:
            await asyncio.sleep(index * 0.002)  # do not open them all in the same millisecond
            try:
                reader, writer = await self._open()
            except OSError as error:
                return f"refused ({type(error).__name__})"
            writer.write(first)
            stop_at = time.monotonic() + seconds
            position = 0
            try:
                while time.monotonic() < stop_at:
                    answer = await _answer_within(reader, 1.0)
                    if answer is not None:
                        return answer
                    writer.write(drip[position % len(drip) : position % len(drip) + 1])
                    position += 1
                return "still open"
            except (ConnectionError, OSError):
                return "closed"
            finally:
                writer.close()

        report.answers = dict(Counter(await asyncio.gather(*(one(i) for i in range(count)))))

    async def _idle(self) -> Report:
        count = min(self.args.idle, MAX_CONNECTIONS)
        report = Report("idle", f"{count} kept-alive connections saying nothing (reopened when closed)")
        reopened = Counter[str]()

        async def attack(seconds: float) -> None:
            stop_at = time.monotonic() + seconds

            async def one(index: int) -> None:
                await asyncio.sleep(index * 0.001)
                while time.monotonic() < stop_at:
                    try:
                        reader, writer = await self._open()
                    except OSError:
                        reopened["refused"] += 1
                        await asyncio.sleep(0.5)
                        continue
                    try:
                        await asyncio.wait_for(reader.read(1), max(stop_at - time.monotonic(), 0.01))
                        reopened["closed by the server, reopened"] += 1
                    except TimeoutError:
                        reopened["held to the end"] += 1
                    finally:
                        writer.close()

            await asyncio.gather(*(one(i) for i in range(count)))

        await self._under(attack, report)
        report.answers = dict(reopened)
        return report

    async def _oversized(self) -> Report:
        count = min(self.args.oversized, 1_000)
        size = self.args.oversized_bytes
        report = Report("oversized", f"{count} uploads of {size:,} bytes")
        ejections_before = await self._proxy_counter("visionpool_proxy_ejections_total")
        times, statuses = [], Counter[str]()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            body = b"\0" * size
            for _ in range(count):
                started = time.monotonic()
                try:
                    async with session.post(self.target + self.path, data=body, headers=_jpeg()) as answer:
                        statuses[str(answer.status)] += 1
                        await answer.read()
                except aiohttp.ClientError as error:
                    statuses[type(error).__name__] += 1
                times.append((time.monotonic() - started) * 1000)
                async with session.post(self.target + self.path, data=self.images[0], headers=_jpeg()) as answer:
                    statuses[f"next valid request {answer.status}"] += 1
        report.answers = dict(statuses)
        times.sort()
        report.notes["time to answer ms (median, max)"] = (round(times[len(times) // 2], 1), round(times[-1], 1))
        ejections = await self._proxy_counter("visionpool_proxy_ejections_total")
        if ejections is not None and ejections_before is not None:
            report.notes["workers ejected"] = ejections - ejections_before
            if ejections > ejections_before:
                report.failed.append("an oversized upload ejected a worker")
        if set(statuses) - {"413", "next valid request 200"}:
            report.failed.append("something other than 413, then 200")
        return report

    async def _fuzz(self) -> Report:
        count = min(self.args.fuzz, 100_000)
        worker = await self._a_worker(self.url) if self.proxy else self.target
        report = Report("fuzz", f"{count} broken images ({', '.join(FORMATS)}), sent to {worker}")
        checkpoint = max(count // 10, 1)  # memory is compared from here on: the first ones warm the allocator up
        rss_before: float | None = None
        statuses = Counter[str]()
        rng = random.Random(0)
        originals = [_encoded(image, fmt) for image in self.images[:2] for fmt in FORMATS]
        stop_at = time.monotonic() + max(self.seconds * 20, 60)
        numbers = iter(range(count))

        async def sender(session: aiohttp.ClientSession) -> None:
            nonlocal rss_before
            for number in numbers:
                if time.monotonic() > stop_at:
                    return
                if number == checkpoint:
                    rss_before = await self._metric(worker, "process_resident_memory_bytes")
                data, content_type = _mutate(rng, rng.choice(originals))
                try:
                    async with session.post(worker + self.path, data=data, headers={"Content-Type": content_type}) as a:
                        statuses[str(a.status)] += 1
                        await a.read()
                except aiohttp.ClientError as error:
                    statuses[type(error).__name__] += 1

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            await asyncio.gather(*(sender(session) for _ in range(8)))
        rss_after = await self._metric(worker, "process_resident_memory_bytes")
        report.answers = dict(statuses)
        report.notes["sent"] = sum(statuses.values())
        if rss_before and rss_after:
            report.notes[f"worker memory MB (after {checkpoint} images, at the end, growth)"] = (
                round(rss_before / 1e6, 1),
                round(rss_after / 1e6, 1),
                f"{(rss_after - rss_before) / rss_before:+.1%}",
            )
        alive = await self._alive(worker)
        report.notes["worker alive after"] = alive
        server_errors = sum(n for status, n in statuses.items() if status.startswith("5") or not status.isdigit())
        if server_errors:
            report.failed.append(f"{server_errors} answers were 5xx or broken connections")
        if not alive:
            report.failed.append("the worker died")
        return report

    async def _bombs(self) -> Report:
        bodies = list(_bombs().items())
        count = min(self.args.bombs, 100_000)
        report = Report("bombs", f"up to {count} images of {len(bodies)} kinds built to cost a decoder seconds each")
        statuses = Counter[str]()

        async def attack(seconds: float) -> None:
            stop_at = time.monotonic() + seconds
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
                for number in range(count):
                    if time.monotonic() > stop_at:
                        return
                    name, (data, content_type) = bodies[number % len(bodies)]
                    try:
                        async with session.post(self.target + self.path, data=data,
                                                headers={"Content-Type": content_type}) as answer:  # fmt: skip
                            statuses[f"{name} {answer.status}"] += 1
                            await answer.read()
                    except aiohttp.ClientError as error:
                        statuses[f"{name} {type(error).__name__}"] += 1

        await self._under(attack, report)
        report.answers = dict(sorted(statuses.items()))
        report.notes["sent"] = sum(statuses.values())
        wrong = sorted(key for key in statuses if not key.endswith(" 400"))
        if wrong:
            report.failed.append(f"not refused with 400: {', '.join(wrong)}")
        return report

    async def _flood(self) -> Report:
        count = min(self.args.flood, 50_000)
        report = Report("flood", f"up to {count:,} connections opened and closed at once, 50 at a time")
        outcomes = Counter[str]()

        async def attack(seconds: float) -> None:
            stop_at = time.monotonic() + seconds
            numbers = iter(range(count))

            async def opener() -> None:
                for _ in numbers:
                    if time.monotonic() > stop_at:
                        return
                    try:
                        _, writer = await self._open()
                        writer.close()
                        outcomes["opened and closed"] += 1
                    except OSError as error:
                        outcomes[type(error).__name__] += 1

            await asyncio.gather(*(opener() for _ in range(50)))

        await self._under(attack, report)
        report.answers = dict(outcomes)
        return report

    async def _kill(self) -> Report:
        report = Report("kill", "SIGKILL, then SIGTERM, to a worker on this machine under load through the proxy")
        if self.proxy is None:
            report.failed.append("needs --target proxy: the proxy must retry what the killed worker held")
            return report
        workers = await self._count_workers()
        for sig in (signal.SIGKILL, signal.SIGTERM):
            await self._wait_for_workers(workers)
            retries_before = await self._proxy_counter("visionpool_proxy_retries_total") or 0
            worker = await self._a_worker(self.proxy)
            pid = await self._pid(worker)

            async def strike(seconds: float, pid: int = pid, sig: signal.Signals = sig) -> None:
                await asyncio.sleep(seconds / 2)
                os.kill(pid, sig)

            load = closed_loop(
                "normal", self.proxy, "proxy", self.model, self.images, 16, self.seconds, 1.0, api_key=self.args.api_key
            )
            measured, _ = await asyncio.gather(load, strike(self.seconds))
            retries = (await self._proxy_counter("visionpool_proxy_retries_total") or 0) - retries_before
            report.answers[f"{sig.name}: requests ok"] = measured.images
            report.answers[f"{sig.name}: requests failed"] = measured.errors
            report.notes[f"{sig.name}: worker {worker} (pid {pid}); proxy retries meanwhile"] = retries
            if measured.errors:
                report.failed.append(f"{measured.errors} requests failed around the {sig.name}")
        await self._wait_for_workers(workers)
        return report

    async def _auth(self) -> Report:
        report = Report("auth", "no key, a bad key, no ticket and a forged ticket, and 20 MB uploads without a key")
        if not self.args.api_key or self.proxy is None:
            report.failed.append(
                "needs a proxy with keys (--url) and one of its keys (--api-key) for the normal clients"
            )
            return report
        worker, statuses, waits = await self._a_worker(self.proxy), Counter[str](), []
        forged = "v1.eyJrIjoibWFsbG9yeSJ9.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"  # no pool's signature
        cases = [
            (self.proxy, {}), (self.proxy, {"Authorization": "Bearer vp_00000000_not-a-key"}),
            (worker, {}), (worker, {"Authorization": f"Bearer {forged}"}),
        ]  # fmt: skip

        async def refused(session: aiohttp.ClientSession, stop_at: float) -> None:
            while time.monotonic() < stop_at:
                for base, headers in cases:
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.post(base + self.path, data=b"x" * 100, headers=headers) as answer:
                            statuses[str(answer.status)] += 1

        async def announced(stop_at: float) -> None:  # 20 MB promised, never sent: the 401 must not wait for it
            head = f"POST {self.path} HTTP/1.1\r\nHost: x\r\nContent-Length: 20000000\r\n\r\n".encode()
            parts = urlsplit(self.proxy)  # type: ignore[arg-type]
            while time.monotonic() < stop_at:
                reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
                started = time.monotonic()
                writer.write(head)
                said = await _answer_within(reader, 2.0)
                waits.append(time.monotonic() - started if said == "401" else float("inf"))
                writer.close()
                await asyncio.sleep(0.05)

        async def attack(seconds: float) -> None:
            stop_at = time.monotonic() + seconds
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
                await asyncio.gather(announced(stop_at), *(refused(session, stop_at) for _ in range(4)))

        cpu = [self.proxy, worker]
        quiet = await self._cpu(cpu)
        report.before = await self._normal()
        calm = await self._cpu(cpu) - quiet  # the normal load's CPU alone, over as long as the attack lasts
        loud = await self._cpu(cpu)
        report.during = await self._normal(attack(self.seconds + 1.0))
        spent = await self._cpu(cpu) - loud
        report.answers = dict(statuses)
        count = max(sum(statuses.values()), 1)
        report.notes["refused"] = count
        report.notes["CPU-ms per refused request (beyond the normal load's)"] = round(
            max(spent - calm, 0.0) * 1000 / count, 3
        )
        report.notes["20 MB uploads without a key: slowest 401 (ms)"] = round(max(waits, default=0.0) * 1000, 1)
        wrong = {status: n for status, n in statuses.items() if status not in ("401", "403")}
        if wrong:
            report.failed.append(f"answers other than 401/403: {wrong}")
        if not waits or max(waits) > 1.0:
            report.failed.append("a 20 MB upload without a key was not refused at once")
        if report.during["errors"]:
            report.failed.append(f"{report.during['errors']} normal requests failed during the attack")
        rise = _rise(report.before.get("p50_ms"), report.during.get("p50_ms"))
        report.notes["normal clients' p50 rise"] = rise
        return report

    async def _cpu(self, urls: list[str]) -> float:
        """The CPU seconds these servers have used, together."""
        return sum([await self._metric(url, "process_cpu_seconds_total") or 0.0 for url in urls])

    async def _a_worker(self, proxy: str) -> str:
        """The first worker the proxy lists that serves the model, on this machine."""
        workers = json.loads(await _get(proxy + WORKERS, self.args.api_key))["workers"]
        for worker in workers:
            if self.model is None or self.model in worker["models"]:
                local_only(worker["url"])
                return str(worker["url"])
        raise ValueError(f"no worker at {proxy} serves {self.model or 'the default model'}")

    async def _count_workers(self) -> int:
        try:
            return len(json.loads(await _get((self.proxy or self.url) + WORKERS, self.args.api_key))["workers"])
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
            return 0

    async def _wait_for_workers(self, count: int, timeout: float = 120.0) -> None:
        """Until the proxy lists ``count`` workers again (supervised ones are restarted), or the timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and await self._count_workers() < count:
            await asyncio.sleep(0.5)

    async def _pid(self, worker: str) -> int:
        return int(json.loads(await _get(worker + HEALTHZ))["pid"])

    async def _alive(self, url: str) -> bool:
        try:
            await self._pid(url)
            return True
        except (aiohttp.ClientError, TimeoutError, KeyError, ValueError):
            return False

    async def _metric(self, url: str, name: str) -> float | None:
        try:
            text = await _get(url + METRICS)
        except (aiohttp.ClientError, TimeoutError):
            return None
        values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)]
        return sum(values) if values else 0.0

    async def _proxy_counter(self, name: str) -> float | None:
        return await self._metric(self.proxy, name) if self.proxy else None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        parts = urlsplit(self.target)
        return await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port), 10)

    def _head(self, headers: str) -> bytes:
        return f"POST {self.path} HTTP/1.1\r\nHost: {urlsplit(self.target).netloc}\r\n{headers}\r\n".encode()


async def _get(url: str, api_key: str | None = None) -> str:
    """GET a small document (with the pool's API key, when it has keys)."""
    timeout = aiohttp.ClientTimeout(total=10)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url, headers=headers) as answer:
        return await answer.text()


async def _answer_within(reader: asyncio.StreamReader, seconds: float) -> str | None:
    """The status a server sent, "closed" if it closed, None if it said nothing within ``seconds``."""
    try:
        line = await asyncio.wait_for(reader.readline(), seconds)
    except TimeoutError:
        return None
    if not line:
        return "closed"
    parts = line.split()
    return parts[1].decode() if len(parts) > 1 else "garbage"


def _jpeg() -> dict[str, str]:
    return {"Content-Type": "image/jpeg"}


def _encoded(jpeg: bytes, fmt: str) -> tuple[bytes, str]:
    """A sample photo in ``fmt``, with its content type."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).convert("RGB").save(buffer, fmt)
    return buffer.getvalue(), f"image/{fmt.lower()}"


def _bombs() -> dict[str, tuple[bytes, str]]:
    """Bodies of about a megabyte built to make a decoder work far beyond their size (worker/layout.py has what
    each cost before it was refused), with their content types."""
    from PIL import Image

    gradient = bytes((x + y) % 256 for y in range(480) for x in range(640))
    picture = Image.frombytes("L", (640, 480), gradient).convert("RGB")

    def saved(fmt: str, **params: Any) -> bytes:
        buffer = io.BytesIO()
        picture.save(buffer, fmt, **params)
        return buffer.getvalue()

    progressive = saved("JPEG", progressive=True)
    last_scan = progressive.rindex(b"\xff\xda")
    scan = progressive[last_scan : last_scan + 2 + int.from_bytes(progressive[last_scan + 2 : last_scan + 4], "big")]
    jpeg, png, gif = saved("JPEG"), saved("PNG"), saved("GIF")
    palette = 13 + (3 << ((gif[10] & 7) + 1) if gif[10] & 0x80 else 0)
    strips = 200_000  # a 1-pixel-wide TIFF of a strip per row: width, height, the strips' offsets
    tags = ((256, 4, 1, 1), (257, 4, 1, strips), (273, 4, strips, 64))
    tiff = b"II*\x00" + struct.pack("<IH", 8, 3) + b"".join(struct.pack("<HHII", *tag) for tag in tags)
    tiff += bytes(4 + 4 * strips)
    runs = b"\x01\x05\x00\x00" * 1000 + b"\x00\x01"  # a 40000x1000 RLE8 BMP: one pixel, then the end of its row
    bmp = b"BM" + struct.pack("<IIIIiiHHI", 54 + 1024 + len(runs), 0, 54 + 1024, 40, 40000, 1000, 1, 8, 1) + bytes(20)
    return {
        "jpeg-scans": (progressive[:-2] + scan * 5000 + progressive[-2:], "image/jpeg"),
        "jpeg-comments": (jpeg[:2] + b"\xff\xfe\x00\x02" * 250_000 + jpeg[2:], "image/jpeg"),
        "png-chunks": (png[:33] + b"\x00\x00\x00\x00abCd\x00\x00\x00\x00" * 80_000 + png[33:], "image/png"),
        "gif-extensions": (gif[:palette] + b"\x21\xfe\x00" * 330_000 + gif[palette:], "image/gif"),
        "tiff-strips": (tiff, "image/tiff"),
        "rle-bmp": (bmp + bytes(1024) + runs, "image/bmp"),
        "eps": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n" + b"x\n" * 500_000, "application/octet-stream"),
    }


def _mutate(rng: random.Random, original: tuple[bytes, str]) -> tuple[bytes, str]:
    """One broken copy: bit flips, a cut, inserted bytes, or the wrong Content-Type."""
    data, content_type = bytearray(original[0]), original[1]
    how = rng.choice(("flip", "cut", "insert", "type", "flip-and-cut"))
    if how in ("flip", "flip-and-cut"):
        for _ in range(rng.randint(1, 32)):
            position = rng.randrange(len(data))
            data[position] ^= 1 << rng.randrange(8)
    if how in ("cut", "flip-and-cut"):
        data = data[: rng.randrange(1, len(data))]
    if how == "insert":
        position = rng.randrange(len(data))
        data[position:position] = rng.randbytes(rng.randint(1, 256))
    if how == "type":
        content_type = rng.choice(("image/png", "image/jpeg", "application/octet-stream", "image/gif", "text/plain"))
    return bytes(data), content_type


def _rise(before: float | None, during: float | None) -> str:
    if not before or during is None:
        return "-"
    return f"{(during - before) / before:+.0%}"


@dataclass
class ChaosSettings:
    """``visionpool chaos``: what to attack, how hard, for how long."""

    url: str = option("http://127.0.0.1:8080", "The proxy (or a worker).", env="URL")
    target: str = option("proxy", "Attack the proxy, or a worker.", choices=("proxy", "worker"), no_env=True)
    model: str | None = option(None, "Model name (default: the workers' default model).", no_env=True)
    scenarios: str = option(",".join(SCENARIOS), f"Any of {', '.join(SCENARIOS)}, comma-separated.", no_env=True)
    seconds: float = option(15.0, "Seconds of each measurement.", no_env=True)
    clients: int = option(8, "Normal clients.", no_env=True)
    slow: int = option(500, "Slow connections.", no_env=True)
    idle: int = option(2000, "Idle connections.", no_env=True)
    oversized: int = option(20, "Oversized uploads.", no_env=True)
    oversized_bytes: int = option(25_000_000, "Their size, in bytes.", no_env=True)
    fuzz: int = option(10_000, "Broken images.", no_env=True)
    bombs: int = option(2_000, "Images built to cost a decoder seconds each (all must be refused).", no_env=True)
    flood: int = option(20_000, "Connections opened and closed.", no_env=True)
    images: list[str] = option(
        default_factory=list, help="Photos for the normal clients (default: generated).", nargs="*", no_env=True
    )
    json: str | None = option(None, "Also write the reports to this JSON file.", metavar="FILE", no_env=True)
    api_key: str | None = option(None, "The pool's API key, for the normal clients (the auth scenario needs one).",
                                 secret=True)  # fmt: skip

    def __post_init__(self) -> None:
        counts = (self.clients, self.slow, self.idle, self.oversized, self.fuzz, self.bombs, self.flood)
        if self.seconds <= 0 or min(counts) < 0:
            raise ValueError("seconds must be above 0 and every count at least 0")


def _run(args: ChaosSettings) -> int:
    scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}")
    local_only(args.url)
    reports = asyncio.run(Chaos(args).run(scenarios))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump([vars(report) for report in reports], file, indent=2)
    failed = [report.scenario for report in reports if report.failed]
    print(
        f"chaos: {len(reports) - len(failed)} of {len(reports)} scenarios ok"
        + (f"; failed: {failed}" if failed else "")
    )
    return 1 if failed else 0


CHAOS = command(
    "chaos",
    "attack a pool on this machine and report what it did to normal clients",
    "Slow uploads, slow heads, idle connections, oversized bodies, broken images, connection floods and killed "
    "workers, each alongside normal clients; loopback and this machine's own addresses only.",
    ChaosSettings,
    _run,
)
