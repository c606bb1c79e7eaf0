"""VCS API throughput: DescribeIpcs over 1000 devices against a bare aiohttp handler, in the same run.

The agent (Supervisor + API listener) runs in this process with a site file of 1000 IPCs; a bare aiohttp
handler that answers a fixed small JSON runs on the same loop on another port. A separate load process sends
the same pre-signed requests (fresh SignatureNonce each, so the replay check passes) over loopback with a fixed
concurrency, bounded in count and in time, first to the bare handler, then to the API. Figures: requests per
second and latency percentiles of each, and ``ratio`` = rps / baseline_rps.

    python -m bench.api --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

KEY_ID = "bench"
SECRET = "bench-secret-not-for-production"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def site_text(data_dir: Path, devices: int) -> str:
    lines = [
        "site: {name: bench, project_id: bench-project, gb_prefix: '3402000000'}",
        f"agent: {{data_dir: '{data_dir}', http: {{host: 127.0.0.1, port: 0}}}}",
        "devices:",
    ]
    for i in range(devices):
        lines.append(
            f"  - {{id: '3402000000132{i + 1:07d}', name: 'camera {i + 1}', address: 'site {i % 7}'}}"
        )
    return "\n".join(lines) + "\n"


def signed_requests(n: int, page_size: int) -> list[tuple[str, bytes]]:
    """(query string, form body) of ``n`` DescribeIpcs calls, each with its own nonce."""
    from agent.api import signature

    body = {"PageNum": "1", "PageSize": str(page_size)}
    out = []
    for _ in range(n):
        query = signature.common_params("DescribeIpcs", KEY_ID)
        query["Signature"] = signature.sign("POST", {**query, **body}, SECRET)
        out.append((urlencode(query), urlencode(body).encode()))
    return out


def _load(url: str, reqs: list[tuple[str, bytes]], concurrency: int, max_s: float, out: Any) -> None:
    """Runs in the load process: POST the requests with ``concurrency`` workers; send back latencies."""
    import aiohttp

    async def main() -> dict[str, Any]:
        lat: list[float] = []
        errors = 0
        statuses: dict[int, int] = {}
        queue = list(reversed(reqs))
        deadline = time.perf_counter() + max_s
        conn = aiohttp.TCPConnector(limit=concurrency)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        async with aiohttp.ClientSession(connector=conn) as session:

            async def worker() -> None:
                nonlocal errors
                while queue and time.perf_counter() < deadline:
                    query, body = queue.pop()
                    t0 = time.perf_counter()
                    try:
                        async with session.post(f"{url}/?{query}", data=body, headers=headers) as resp:
                            await resp.read()
                            statuses[resp.status] = statuses.get(resp.status, 0) + 1
                            if resp.status != 200:
                                errors += 1
                    except aiohttp.ClientError:
                        errors += 1
                        continue
                    lat.append(time.perf_counter() - t0)

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            wall = time.perf_counter() - start
        return {"latencies": lat, "wall_s": wall, "errors": errors, "statuses": statuses}

    out.send(asyncio.run(main()))
    out.close()


async def _measure(url: str, reqs: list[tuple[str, bytes]], concurrency: int, max_s: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_load, args=(url, reqs, concurrency, max_s, child), daemon=True)
    proc.start()
    child.close()
    loop = asyncio.get_running_loop()
    try:
        res: dict[str, Any] = await asyncio.wait_for(loop.run_in_executor(None, parent.recv), max_s + 60)
    finally:
        await loop.run_in_executor(None, proc.join, 10)
        if proc.is_alive():
            proc.kill()
    lat = sorted(res["latencies"])
    done = len(lat)
    return {
        "requests": done,
        "errors": res["errors"],
        "statuses": res["statuses"],
        "rps": round(done / res["wall_s"], 1) if res["wall_s"] > 0 else 0.0,
        "p50_ms": round(statistics.median(lat) * 1000, 2) if lat else None,
        "p99_ms": round(lat[min(done - 1, int(done * 0.99))] * 1000, 2) if lat else None,
    }


async def run(devices: int, requests: int, concurrency: int, page_size: int, max_s: float) -> dict[str, Any]:
    from aiohttp import web

    from agent import config as cfgmod
    from agent.api import ApiConfig, ApiServer
    from agent.box.supervisor import Supervisor

    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        data = Path(tmp)
        site = cfgmod.load_text(site_text(data, devices))
        sup = Supervisor(site=site)
        await sup.start()
        cfg = ApiConfig.model_validate(
            {"host": "127.0.0.1", "port": 0, "access_keys": [{"id": KEY_ID, "secret": SECRET}]}
        )
        api = ApiServer(sup, cfg, sup.overlay, sup.links, data, cameras=sup.streams)
        await api.start()

        async def bare(request: web.Request) -> web.Response:
            await request.post()
            return web.json_response({"RequestId": "bench", "Code": "200", "Message": "Success"})

        app = web.Application()
        app.router.add_post("/", bare)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = _free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            baseline = await _measure(
                f"http://127.0.0.1:{port}", signed_requests(requests, page_size), concurrency, max_s
            )
            measured = await _measure(
                f"http://127.0.0.1:{api.port}", signed_requests(requests, page_size), concurrency, max_s
            )
        finally:
            await runner.cleanup()
            await api.stop()
            await sup.stop()
    return {
        "bench": "api.DescribeIpcs",
        "devices": devices,
        "page_size": page_size,
        "concurrency": concurrency,
        "requests": measured["requests"],
        "errors": measured["errors"],
        "rps": measured["rps"],
        "p50_ms": measured["p50_ms"],
        "p99_ms": measured["p99_ms"],
        "baseline_rps": baseline["rps"],
        "baseline_p99_ms": baseline["p99_ms"],
        "ratio": round(measured["rps"] / baseline["rps"], 3) if baseline["rps"] else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=2000, help="at most this many calls per side")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--page-size", type=int, default=50, help="DescribeIpcs PageSize (at most 200)")
    ap.add_argument("--max-seconds", type=float, default=20.0, help="time limit per side")
    ap.add_argument("--json", action="store_true", help="print only the JSON figures")
    args = ap.parse_args(argv)
    result = asyncio.run(run(args.devices, args.requests, args.concurrency, args.page_size, args.max_seconds))
    if not args.json:
        print(
            f"DescribeIpcs over {result['devices']} devices: {result['rps']} req/s, p99 {result['p99_ms']} ms; "
            f"bare aiohttp: {result['baseline_rps']} req/s (ratio {result['ratio']})"
        )
    print(json.dumps(result))
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
