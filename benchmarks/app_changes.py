"""How long an app change takes to reach every node, per app store (file, Redis, PostgreSQL).

    .venv/bin/python -m benchmarks.app_changes [--changes 30] [--out DIR]

For each store it starts Redis (and PostgreSQL for that store), two ``hub ws`` and one ``hub ingest``,
each with an admin port, creates one app, then changes its secret ``--changes`` times: through node 0's
admin API (Redis, PostgreSQL) or by renaming a new apps file into place (file). The clock starts just
before the write and stops when the last node's admin API shows the new secret (each node polled every
2 ms). PostgreSQL runs as the ``postgres`` user when this runs as root. Writes ``app_changes.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import pwd
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp

from benchmarks.topology import LOOPBACK, REPO_ROOT, Child, free_port, hub_executable

TOKEN = "benchmark-admin-token-0123456789"
POLL_SECONDS = 0.002


def _start_redis(workdir: Path, children: list[Child]) -> str:
    port = free_port()
    argv = [shutil.which("redis-server") or "redis-server", "--bind", LOOPBACK, "--port", str(port), "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(workdir)]
    child = Child("redis-server", argv, port).start()
    children.append(child)
    child.wait_tcp_ready()
    return f"redis://{LOOPBACK}:{port}/0"


def _start_postgres(workdir: Path, children: list[Child]) -> str:
    bin_dir = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1]).parent
    data = workdir / "pgdata"
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        user = pwd.getpwnam("postgres")
        os.chown(workdir, user.pw_uid, user.pw_gid)
        as_user = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
    initdb = [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "hub", "--auth=trust"]
    subprocess.run(initdb, check=True, capture_output=True)
    port = free_port()
    argv = [*as_user, str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(workdir)]
    argv += ["-c", f"listen_addresses={LOOPBACK}", "-c", "fsync=off", "-c", "synchronous_commit=off"]
    child = Child("postgres", argv, port).start()
    children.append(child)
    child.wait_tcp_ready(timeout=30)
    ready = [str(bin_dir / "pg_isready"), "-q", "-h", LOOPBACK, "-p", str(port)]
    deadline = time.monotonic() + 30
    while subprocess.run(ready, check=False).returncode != 0:  # the port opens before recovery ends
        if time.monotonic() > deadline:
            raise RuntimeError(f"PostgreSQL not ready:\n{child.output()}")
        time.sleep(0.05)
    return f"postgresql://hub@{LOOPBACK}:{port}/postgres"


def _start_nodes(redis_url: str, store_args: list[str], children: list[Child]) -> list[Child]:
    nodes = []
    for role in ("ws", "ws", "ingest"):
        port, admin_port = free_port(), free_port()
        argv = [*hub_executable(), role, "--host", LOOPBACK, "--port", str(port), "--metrics-port", "0"]
        argv += ["--admin-port", str(admin_port), "--redis-url", redis_url, "--log-level", "warning", *store_args]
        child = Child(f"hub-{role}-{port}", argv, port, env={"HUB_ADMIN_TOKEN": TOKEN}).start()
        child.admin_port = admin_port
        children.append(child)
        nodes.append(child)
    for child in nodes:
        child.wait_http_ready(f"http://{LOOPBACK}:{child.port}/ready")
    return nodes


async def _shows(session: aiohttp.ClientSession, node: Child, app_id: str, secret: str) -> None:
    url = f"http://{LOOPBACK}:{node.admin_port}/api/apps/{app_id}"
    while True:
        async with session.get(url) as response:
            if response.status == 200 and (await response.json())["secret"] == secret:
                return
        await asyncio.sleep(POLL_SECONDS)


async def _measure(kind: str, nodes: list[Child], apps_file: Path | None, changes: int) -> list[float]:
    app = {"id": "100", "key": "bench-key", "secret": "s-0"}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        admin0 = f"http://{LOOPBACK}:{nodes[0].admin_port}/api/apps"
        if apps_file is None:
            async with session.post(admin0, json=app) as response:
                assert response.status == 201, await response.text()
        await asyncio.gather(*(_shows(session, node, "100", "s-0") for node in nodes))
        seconds = []
        phase = random.Random(changes)
        for i in range(1, changes + 1):
            secret = f"s-{i}"
            # A random phase against the file store's 1 s poll (right after the last change was seen, the
            # next poll is a whole second away, which would measure only the worst case).
            await asyncio.sleep(phase.uniform(0.0, 1.0))
            started = time.perf_counter()
            if apps_file is None:
                async with session.patch(f"{admin0}/100", json={"secret": secret}) as response:
                    assert response.status == 200, await response.text()
            else:
                staged = apps_file.with_suffix(".new")
                staged.write_text(json.dumps({"apps": [{**app, "secret": secret}]}))
                staged.rename(apps_file)
            await asyncio.gather(*(_shows(session, node, "100", secret) for node in nodes))
            seconds.append(time.perf_counter() - started)
    return seconds


def run_store(kind: str, changes: int) -> list[float]:
    """Start a deployment with this store, measure ``changes`` changes, stop everything (by pid)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"hub-app-changes-{kind}-"))
    children: list[Child] = []
    pg_dir = Path(tempfile.mkdtemp(prefix="hub-app-changes-pg-"))
    try:
        redis_url = _start_redis(workdir, children)
        apps_file: Path | None = None
        if kind == "file":
            apps_file = workdir / "apps.json"
            apps_file.write_text(json.dumps({"apps": [{"id": "100", "key": "bench-key", "secret": "s-0"}]}))
            store_args = ["--apps-file", str(apps_file)]
        elif kind == "redis":
            store_args = ["--app-store", "redis"]
        else:
            url = _start_postgres(pg_dir, children)
            subprocess.run([*hub_executable(), "apps", "migrate", "--postgres-url", url], check=True, cwd=REPO_ROOT)
            store_args = ["--app-store", "postgres", "--postgres-url", url]
        nodes = _start_nodes(redis_url, store_args, children)
        return asyncio.run(_measure(kind, nodes, apps_file, changes))
    finally:
        for child in reversed(children):
            child.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(pg_dir, ignore_errors=True)


def _ms(values: list[float], q: float) -> str:
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.1f}"


def main() -> None:
    """Measure every store and print (and write) the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.app_changes")
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--stores", nargs="*", default=["file", "redis", "postgres"])
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "app-changes"))
    args = parser.parse_args()
    lines = [
        "| store | changes | p50 ms | p90 ms | max ms | mean ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind in args.stores:
        seconds = run_store(kind, args.changes)
        mean = statistics.mean(seconds) * 1000
        lines.append(
            f"| {kind} | {len(seconds)} | {_ms(seconds, 0.5)} | {_ms(seconds, 0.9)} | {_ms(seconds, 1.0)} | {mean:.1f} |"
        )
        print(lines[-1], flush=True)
    load = os.getloadavg()
    text = (
        "# App change propagation: write to every node's admin API showing it (2 ws + 1 ingest)\n\n"
        + "\n".join(lines)
        + f"\n\nLoad average at the end: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} (2 CPUs, shared).\n"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "app_changes.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
