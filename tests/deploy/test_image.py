"""deploy/Dockerfile, built and run: hub serve answers pusher-js, hub ws + hub ingest work over Redis,
the HEALTHCHECK reports healthy, the process runs as uid 10001, and `docker stop` drains and exits 0.

The Docker engine is Debian's `docker.io`; when no daemon answers, the test starts one of its own
(``--iptables=false --bridge=none``: containers use host networking, on loopback only) and stops it by
pid afterwards. No image registry is reachable from here, so the base image is built from Debian
packages with ``debootstrap`` (python3, python3-venv, and this machine's CA bundle so the build's pip
can reach PyPI through its egress proxy) and passed to the Dockerfile as ``BASE``; the default
``python:3.12-slim`` is what users build from.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pusher
import pytest

from tests.support.auth_server import AuthServer
from tests.support.js_clients import JsClients, require_js_harness
from tests.support.names import unique
from tests.support.ports import LOOPBACK, free_port
from tests.support.processes import REPO_ROOT, http_ready
from tests.support.redis_server import RedisServer
from tests.support.requirements import require, require_executable
from tests.support.topology import APP_ID, APP_KEY, APP_SECRET

BASE_IMAGE = "hub-test-base:bookworm"
IMAGE = "hub-test:latest"
DOCKER = "/usr/bin/docker"  # Debian's client (a static one elsewhere on PATH may not match the daemon)
STATE = Path("/var/tmp/hub-test-docker")  # the test daemon's data, kept between runs (the base image is reused)
SOCKET = STATE / "docker.sock"


def _env() -> dict[str, str]:
    return {**os.environ, "DOCKER_HOST": os.environ.get("HUB_TEST_DOCKER_HOST", f"unix://{SOCKET}")}


def docker(*args: str, timeout: float = 600, check: bool = True) -> str:
    """Run the docker client against the test's daemon; its stdout."""
    done = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, env=_env())
    if check and done.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return done.stdout.strip()


def _daemon_answers() -> bool:
    try:
        docker("version", "--format", "{{.Server.Version}}", timeout=10)
    except (AssertionError, subprocess.TimeoutExpired):
        return False
    return True


@pytest.fixture(scope="module")
def engine() -> Iterator[None]:
    """A Docker daemon: an answering one, or one this module starts and stops by pid."""
    require(Path(DOCKER).exists() and shutil.which("dockerd") is not None, "docker.io is not installed")
    if _daemon_answers():
        yield
        return
    STATE.mkdir(parents=True, exist_ok=True)
    log = (STATE / "dockerd.log").open("ab")
    daemon = subprocess.Popen(
        [
            "dockerd",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            f"--data-root={STATE / 'root'}",
            f"--exec-root={STATE / 'exec'}",
            f"--pidfile={STATE / 'dockerd.pid'}",
            f"--host=unix://{SOCKET}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not _daemon_answers():
            if daemon.poll() is not None or time.monotonic() > deadline:
                tail = (STATE / "dockerd.log").read_text(errors="replace")[-3000:]
                require(False, f"dockerd cannot run here (exit {daemon.poll()}):\n{tail}")
            time.sleep(0.5)
        yield
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def image(engine: None) -> str:
    """deploy/Dockerfile built on a base image made from Debian packages."""
    if not docker("images", "-q", BASE_IMAGE):
        debootstrap = require_executable("debootstrap")
        with tempfile.TemporaryDirectory(prefix="hub-base-") as scratch:
            rootfs = Path(scratch) / "rootfs"
            subprocess.run(
                [debootstrap, "--variant=minbase", "--include=python3,python3-venv,ca-certificates", "bookworm",
                 str(rootfs), "http://deb.debian.org/debian"],
                check=True, capture_output=True, timeout=900,
            )  # fmt: skip
            shutil.copy("/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/ca-certificates.crt")
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            subprocess.run([DOCKER, "import", "-", BASE_IMAGE], stdin=tar.stdout, check=True, env=_env(), timeout=600)
            tar.wait(timeout=60)
    with tempfile.TemporaryDirectory(prefix="hub-context-") as context:
        # Exactly deploy/Dockerfile.dockerignore's allow-list (the legacy builder reads no per-Dockerfile ignore file).
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(REPO_ROOT / name, context)
        shutil.copytree(REPO_ROOT / "hub", Path(context) / "hub", ignore=shutil.ignore_patterns("__pycache__"))
        docker("build", "--network", "host", "--build-arg", f"BASE={BASE_IMAGE}", "-f",
               str(REPO_ROOT / "deploy" / "Dockerfile"), "-t", IMAGE, context, timeout=900)  # fmt: skip
    return IMAGE


class Container:
    """One container of the image on the host network, removed on exit."""

    def __init__(self, image: str, *command: str, env: dict[str, str]) -> None:
        flags = [f"--env={k}={v}" for k, v in env.items()]
        self.id = docker("run", "-d", "--network", "host", *flags, image, *command)

    def inspect(self, template: str) -> str:
        """``docker inspect --format template``."""
        return docker("inspect", "--format", template, self.id)

    def logs(self) -> str:
        """What the container wrote, stdout and stderr."""
        done = subprocess.run([DOCKER, "logs", self.id], capture_output=True, text=True, timeout=60, env=_env())
        return done.stdout + done.stderr

    def remove(self) -> None:
        """Remove it, running or not."""
        docker("rm", "-f", self.id, check=False)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check`` every half second; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


@pytest.fixture
async def js() -> AsyncIterator[JsClients]:
    """pusher-js clients."""
    require_js_harness()
    async with JsClients() as clients:
        yield clients


@pytest.fixture
async def auth() -> AsyncIterator[AuthServer]:
    """Channel auth for the default app."""
    async with AuthServer(app_id=APP_ID, key=APP_KEY, secret=APP_SECRET) as server:
        yield server


APP_ENV = {"PUSHER_APP_ID": APP_ID, "PUSHER_APP_KEY": APP_KEY, "PUSHER_APP_SECRET": APP_SECRET}


async def test_hub_serve_in_the_image_answers_pusher_js_runs_as_10001_is_healthy_and_stops_cleanly(
    image: str, js: JsClients, auth: AuthServer
) -> None:
    port, metrics = free_port(), free_port()
    env = {
        **APP_ENV,
        "HUB_HOST": LOOPBACK,
        "HUB_PORT": str(port),
        "HUB_METRICS_PORT": str(metrics),
        "HUB_DRAIN_SECONDS": "1",
    }
    container = Container(image, env=env)
    try:
        await asyncio.to_thread(wait_until, http_ready(f"http://{LOOPBACK}:{port}/ready"), 30, container.logs())
        channel = unique("private-in-a-container")
        await js.connect("a", port=port, key=APP_KEY, auth_url=auth.channel_auth_url)
        await js.subscribe("a", channel)
        sdk = pusher.Pusher(app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, host=LOOPBACK, port=port, ssl=False)
        await asyncio.to_thread(sdk.trigger, channel, "boxed", {"n": 1})
        assert (await js.wait_for("a", source="channel", channel=channel, event="boxed")).data == {"n": 1}

        assert docker("exec", container.id, "id", "-u") == "10001"
        top = docker("top", container.id, "-o", "pid,uid,cmd")
        assert any(line.split()[1] == "10001" and "hub serve" in line for line in top.splitlines()[1:]), top
        await asyncio.to_thread(
            wait_until, lambda: container.inspect("{{.State.Health.Status}}") == "healthy", 60, "never healthy"
        )

        docker("stop", "--time", "30", container.id, timeout=60)
        assert container.inspect("{{.State.ExitCode}}") == "0"
        logs = container.logs()
        assert '"drain_requested"' in logs and '"node_stopped"' in logs, logs[-2000:]
    finally:
        container.remove()


async def test_hub_ws_and_hub_ingest_in_the_image_work_over_redis(image: str, js: JsClients, auth: AuthServer) -> None:
    require_executable("redis-server")
    with RedisServer() as redis:
        ws_port, api_port = free_port(), free_port()
        common = {**APP_ENV, "HUB_HOST": LOOPBACK, "HUB_REDIS_URL": redis.url, "HUB_METRICS_PORT": "0"}
        ws = Container(image, "hub", "ws", env={**common, "HUB_PORT": str(ws_port)})
        ingest = Container(image, "hub", "ingest", env={**common, "HUB_PORT": str(api_port)})
        try:
            for port, container in ((ws_port, ws), (api_port, ingest)):
                await asyncio.to_thread(wait_until, http_ready(f"http://{LOOPBACK}:{port}/ready"), 30, container.logs())
            channel = unique("private-clustered-containers")
            await js.connect("a", port=ws_port, key=APP_KEY, auth_url=auth.channel_auth_url)
            await js.subscribe("a", channel)
            sdk = pusher.Pusher(app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, host=LOOPBACK, port=api_port, ssl=False)
            await asyncio.to_thread(sdk.trigger, channel, "through-redis", {"n": 2})
            assert (await js.wait_for("a", source="channel", channel=channel, event="through-redis")).data == {"n": 2}
            info = json.loads(docker("inspect", "--format", "{{json .Config.User}}", ws.id))
            assert info == "10001:10001"
        finally:
            ws.remove()
            ingest.remove()
