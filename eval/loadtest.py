"""HTTP load test of ``artlens serve`` (loopback only, bounded in time): ``artlens bench http``.

For each mode (micro-batching on, then off) it starts the real server in a subprocess on a free 127.0.0.1 port,
waits for /ready, runs ``clients`` concurrent clients posting real phone photos for ``warmup`` + ``duration``
seconds (only the last ``duration`` seconds are measured), optionally asks the server to reload its index every
``reload_every`` seconds (admin route), samples the server's RSS every second, then stops it. Reported per mode:
status counts (any 5xx other than a deliberate 503 is a failure), latency p50/p95/p99, throughput, RSS after
warm-up (first / last / peak sample and a least-squares slope in MB per minute, :func:`rss_trend`), reloads and
their outcome, mean ONNX batch size; and the throughput ratio.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from artlens.calibration.queries import read_queries

from .bench import describe_machine

MODES = {"batched": True, "unbatched": False}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "mean": 0.0}
    arr = np.asarray(values)
    return {"p50": round(float(np.percentile(arr, 50)), 1), "p95": round(float(np.percentile(arr, 95)), 1),
            "p99": round(float(np.percentile(arr, 99)), 1), "mean": round(float(arr.mean()), 1)}


def _metric_sum(text: str, name: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M))


def rss_trend(samples: list[tuple[float, float]], warmup: float) -> dict:
    """How the server's RSS moved after warm-up: ``samples`` are (seconds since start, MB).

    ``slope_mb_per_min`` is the least-squares line over every sample after warm-up (not last minus first, which
    one allocation spike or one freed arena would decide); ``slope_second_half_mb_per_min`` the same over the later
    half only, to tell growth that levels off (caches filling, then full) from growth that goes on (a leak).
    ``after_warmup`` / ``end`` / ``peak`` / ``low``: first, last, highest and lowest sample after warm-up.
    """
    after = [(t, v) for t, v in samples if t >= warmup]
    if len(after) < 3:
        return {"after_warmup": round(after[0][1], 1) if after else None, "end": round(after[-1][1], 1)
                if after else None, "peak": max((round(v, 1) for _, v in after), default=None),
                "low": min((round(v, 1) for _, v in after), default=None), "samples": len(after),
                "minutes": 0.0, "slope_mb_per_min": None, "slope_second_half_mb_per_min": None}
    times = np.asarray([t for t, _ in after])
    values = np.asarray([v for _, v in after])

    def slope(t: np.ndarray, v: np.ndarray) -> float | None:
        return round(float(np.polyfit(t, v, 1)[0]) * 60, 2) if len(t) >= 3 and np.ptp(t) > 0 else None

    half = len(after) // 2
    return {"after_warmup": round(float(values[0]), 1), "end": round(float(values[-1]), 1),
            "peak": round(float(values.max()), 1), "low": round(float(values.min()), 1), "samples": len(after),
            "minutes": round(float(times[-1] - times[0]) / 60, 2), "slope_mb_per_min": slope(times, values),
            "slope_second_half_mb_per_min": slope(times[half:], values[half:])}


class ServerProcess:
    def __init__(self, index: Path, model: Path | None, micro_batching: bool, api_key: str, env: dict[str, str]):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "artlens.cli", "serve", "--index", str(index), "--host", "127.0.0.1",
               "--port", str(self.port), "--micro-batching" if micro_batching else "--no-micro-batching"]
        if model:
            cmd += ["--model", str(model)]
        self.env = {**os.environ, "ARTLENS_RATE_LIMIT_PER_MINUTE": "0", "ARTLENS_API_KEYS": api_key,
                    "ARTLENS_LOG_LEVEL": "WARNING", **env}
        self.cmd = cmd

    def __enter__(self) -> ServerProcess:
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.proc.kill()
        raise RuntimeError("server did not become ready in 300 s")

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def _drive(url: str, photos: list[bytes], clients: int, warmup: float, duration: float, api_key: str,
                 reload_every: float | None, pid: int) -> dict:
    start = time.monotonic()
    measure_from, stop_at = start + warmup, start + warmup + duration
    records: list[tuple[float, float, int]] = []  # (end time, latency s, status)
    errors: Counter[str] = Counter()
    reloads: list[dict] = []
    rss: list[tuple[float, float]] = []
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(300.0), limits=limits) as http:

        async def client(n: int) -> None:
            i = n
            while time.monotonic() < stop_at:
                body = photos[i % len(photos)]
                i += clients
                t0 = time.monotonic()
                try:
                    r = await http.post("/v1/recognize", files={"image": ("photo.jpg", body, "image/jpeg")})
                    status = r.status_code
                    if status == 503:
                        await asyncio.sleep(float(r.headers.get("retry-after", "1")))
                except httpx.HTTPError as exc:
                    status = -1
                    errors[type(exc).__name__] += 1
                records.append((time.monotonic(), time.monotonic() - t0, status))

        async def reloader() -> None:
            assert reload_every
            while time.monotonic() + reload_every < stop_at:
                await asyncio.sleep(reload_every)
                t0 = time.monotonic()
                r = await http.post("/v1/index/reload", headers={"X-API-Key": api_key})
                reloads.append({"at_s": round(t0 - start, 1), "status": r.status_code,
                                "seconds": round(time.monotonic() - t0, 2)})

        async def sampler() -> None:
            while time.monotonic() < stop_at:
                value = _rss_mb(pid)
                if value is not None:
                    rss.append((time.monotonic() - start, value))
                await asyncio.sleep(1.0)

        tasks = [client(n) for n in range(clients)] + [sampler()]
        if reload_every:
            tasks.append(reloader())
        await asyncio.gather(*tasks)
        metrics = (await http.get("/metrics")).text
    measured = [(lat, status) for end, lat, status in records if measure_from <= end <= stop_at]
    ok = [lat * 1e3 for lat, status in measured if status == 200]
    statuses = Counter(str(s) for _, s in measured)
    all_statuses = Counter(str(s) for _, _, s in records)
    batches = _metric_sum(metrics, "artlens_embed_batch_size_count")
    return {
        "requests_measured": len(measured),
        "statuses_measured": dict(statuses),
        "statuses_all": dict(all_statuses),
        "server_errors": sum(n for s, n in all_statuses.items() if s.startswith("5") and s != "503"),
        "deliberate_503": all_statuses.get("503", 0),
        "transport_errors": dict(errors),
        "throughput_rps": round(len(ok) / duration, 3),
        "latency_ms": _percentiles(ok),
        "rss_mb": {**rss_trend(rss, warmup), "series": [[round(t), round(v)] for t, v in rss[::5]]},
        "reloads": reloads,
        "mean_onnx_batch": round(_metric_sum(metrics, "artlens_embed_batch_size_sum") / batches, 2)
        if batches else None,
    }


def run_loadtest(index: str | Path, queries: str | Path, *, model: str | Path | None = None, clients: int = 32,
                 duration: float = 60.0, warmup: float = 15.0, reload_every: float | None = None,
                 modes: tuple[str, ...] = ("batched", "unbatched"), env: dict[str, str] | None = None,
                 progress: Callable[[str], None] | None = None) -> dict:
    photos = [path.read_bytes() for _, path, _ in read_queries(queries)]
    if not photos:
        raise ValueError(f"{queries}: no photos")
    say = progress or (lambda msg: None)
    api_key = secrets.token_hex(16)
    results: dict = {}
    for mode in modes:
        say(f"{mode}: starting the server")
        with ServerProcess(Path(index), Path(model) if model else None, MODES[mode], api_key, env or {}) as server:
            say(f"{mode}: {clients} clients, {warmup:.0f} s warm-up + {duration:.0f} s measured")
            results[mode] = asyncio.run(_drive(server.url, photos, clients, warmup, duration, api_key, reload_every,
                                               server.proc.pid))
    report = {"index": str(index), "queries": str(queries), "photos": len(photos), "clients": clients,
              "duration_s": duration, "warmup_s": warmup, "reload_every_s": reload_every,
              "machine": describe_machine(), "modes": results}
    if "batched" in results and "unbatched" in results and results["unbatched"]["throughput_rps"]:
        report["throughput_ratio_batched_vs_unbatched"] = round(
            results["batched"]["throughput_rps"] / results["unbatched"]["throughput_rps"], 3)
    return report
