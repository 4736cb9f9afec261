"""TLS served by hub itself: pusher-js with forceTLS and the `pusher` SDK over https, against a throwaway CA.

Every role and port (clients/API, metrics) speaks TLS with `--tls-cert`/`--tls-key`; SIGHUP re-reads
the files without dropping the connections already open.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pusher
import pytest
from pusher.requests import RequestsBackend

from tests.support.auth_server import AuthServer
from tests.support.certificates import issue_server_certificate, make_certificates
from tests.support.js_clients import JsClients, require_js_harness
from tests.support.names import unique
from tests.support.ports import LOOPBACK, free_port
from tests.support.processes import ManagedProcess, hub_command
from tests.support.redis_server import RedisServer
from tests.support.requirements import require_executable
from tests.support.topology import APP_ID, APP_KEY, APP_SECRET, write_apps_file


@pytest.fixture(scope="module")
def certs() -> Iterator[dict[str, Path]]:
    """A test CA, the certificate the nodes start with, and a renewal signed by the same CA."""
    directory = Path(tempfile.mkdtemp(prefix="hub-tls-"))
    files = make_certificates(directory)
    files.update(issue_server_certificate(directory, files, "renewed", "renewed.localhost"))
    yield files
    shutil.rmtree(directory, ignore_errors=True)


def client_context(ca: Path) -> ssl.SSLContext:
    """What a client that trusts only the test CA uses."""
    return ssl.create_default_context(cafile=str(ca))


def https_ready(url: str, ca: Path) -> Callable[[], bool]:
    """Ready once GET `url` answers 200 over TLS verified against `ca`."""
    context = client_context(ca)

    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=0.5, context=context) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    return check


def presented_common_name(port: int, ca: Path) -> str:
    """The CN of the certificate the server presents in a new handshake."""
    with (
        socket.create_connection((LOOPBACK, port), timeout=2) as raw,
        client_context(ca).wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        cert = tls.getpeercert()
    assert cert is not None
    names = [str(pair[1]) for rdn in cert["subject"] for pair in rdn if pair[0] == "commonName"]
    return names[0]


def start_tls_hub(
    role: str, certs: dict[str, Path], workdir: Path, *extra: str, cert: str = "server"
) -> tuple[ManagedProcess, int, int]:
    """A hub `role` serving TLS with copies of `cert` (so a test may overwrite them); returns it and its ports."""
    shutil.copy(certs[cert], workdir / "tls.pem")
    shutil.copy(certs[f"{cert}-key"], workdir / "tls-key.pem")
    port, metrics_port = free_port(), free_port()
    argv = hub_command(
        role,
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--metrics-port",
        str(metrics_port),
        "--apps-file",
        str(write_apps_file(workdir)),
        "--tls-cert",
        str(workdir / "tls.pem"),
        "--tls-key",
        str(workdir / "tls-key.pem"),
        *extra,
    )
    process = ManagedProcess(argv, name=f"hub-{role}-tls-{port}").start()
    try:
        process.wait_ready(https_ready(f"https://{LOOPBACK}:{port}/ready", certs["ca"]))
    except BaseException:
        process.close()
        raise
    return process, port, metrics_port


class _TrustTestCA(RequestsBackend):  # type: ignore[misc]
    """The SDK's own requests backend, trusting the test CA instead of its bundled one (as a user would)."""

    def __init__(self, client: Any, ca: str, **options: Any) -> None:
        super().__init__(client, **options)
        self.options["verify"] = ca


def https_sdk(port: int, ca: Path) -> pusher.Pusher:
    """The official Python SDK over https."""
    return pusher.Pusher(
        app_id=APP_ID,
        key=APP_KEY,
        secret=APP_SECRET,
        host=LOOPBACK,
        port=port,
        ssl=True,
        backend=_TrustTestCA,
        ca=str(ca),
    )


@pytest.fixture
async def tls_js(certs: dict[str, Path]) -> AsyncIterator[JsClients]:
    """pusher-js in Node, trusting the test CA (NODE_EXTRA_CA_CERTS, as a deployment would)."""
    require_js_harness()
    async with JsClients(env={"NODE_EXTRA_CA_CERTS": str(certs["ca"])}) as clients:
        yield clients


@pytest.fixture
async def auth() -> AsyncIterator[AuthServer]:
    """Channel auth for the default test app."""
    async with AuthServer(app_id=APP_ID, key=APP_KEY, secret=APP_SECRET) as server:
        yield server


async def wss_client(js: JsClients, cid: str, port: int, auth: AuthServer, channel: str) -> str:
    socket_id = await js.connect(
        cid, port=port, key=APP_KEY, host="localhost", auth_url=auth.channel_auth_url, options={"forceTLS": True}
    )
    await js.subscribe(cid, channel)
    return socket_id


async def test_pusher_js_with_force_tls_receives_what_the_sdk_publishes_over_https(
    certs: dict[str, Path], tls_js: JsClients, auth: AuthServer, tmp_path: Path
) -> None:
    process, port, metrics_port = start_tls_hub("serve", certs, tmp_path)
    try:
        channel = unique("private-secure")
        await wss_client(tls_js, "a", port, auth, channel)

        await asyncio.to_thread(https_sdk(port, certs["ca"]).trigger, channel, "secret-news", {"n": 1})

        record = await tls_js.wait_for("a", source="channel", channel=channel, event="secret-news")
        assert record.data == {"n": 1}
        metrics = await asyncio.to_thread(
            lambda: urllib.request.urlopen(
                f"https://{LOOPBACK}:{metrics_port}/metrics", timeout=2, context=client_context(certs["ca"])
            ).read()
        )
        assert b"hub_ws_messages_received_total" in metrics
    finally:
        await process.stop_async()
        process.close()


def test_plain_http_and_untrusted_clients_are_refused_on_a_tls_port(certs: dict[str, Path], tmp_path: Path) -> None:
    process, port, _ = start_tls_hub("serve", certs, tmp_path)
    try:
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://{LOOPBACK}:{port}/", timeout=2).read()
        with pytest.raises(urllib.error.URLError) as refused:
            urllib.request.urlopen(f"https://{LOOPBACK}:{port}/", timeout=2).read()  # system CAs only
        assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)
        assert process.is_running()
    finally:
        process.close()


async def test_sighup_rereads_the_certificate_and_keeps_open_connections(
    certs: dict[str, Path], tls_js: JsClients, auth: AuthServer, tmp_path: Path
) -> None:
    process, port, _ = start_tls_hub("serve", certs, tmp_path)
    try:
        channel = unique("private-renewal")
        before = await wss_client(tls_js, "long-lived", port, auth, channel)
        assert presented_common_name(port, certs["ca"]) == "localhost"

        shutil.copy(certs["renewed"], tmp_path / "tls.pem")
        shutil.copy(certs["renewed-key"], tmp_path / "tls-key.pem")
        process.send_signal(signal.SIGHUP)

        deadline = time.monotonic() + 5
        while presented_common_name(port, certs["ca"]) != "renewed.localhost":
            assert time.monotonic() < deadline, f"new handshakes still get the old certificate:\n{process.output()}"
            await asyncio.sleep(0.1)
        await asyncio.to_thread(https_sdk(port, certs["ca"]).trigger, channel, "after-renewal", {"n": 2})
        await tls_js.wait_for("long-lived", source="channel", channel=channel, event="after-renewal")
        assert (await tls_js.state("long-lived")).socket_id == before, "the open connection survived the reload"
        assert "tls_reloaded" in process.output()
    finally:
        process.close()


async def test_a_reload_with_unusable_files_keeps_serving_the_old_certificate(
    certs: dict[str, Path], tmp_path: Path
) -> None:
    process, port, _ = start_tls_hub("serve", certs, tmp_path)
    try:
        (tmp_path / "tls-key.pem").write_bytes(certs["renewed-key"].read_bytes())  # key of another certificate

        process.send_signal(signal.SIGHUP)

        deadline = time.monotonic() + 5
        while "tls_reload_failed" not in process.output():
            assert time.monotonic() < deadline, process.output()
            await asyncio.sleep(0.1)
        assert presented_common_name(port, certs["ca"]) == "localhost"
        assert process.is_running()
    finally:
        process.close()


def test_unusable_tls_files_stop_start_up_with_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "not-a-cert.pem").write_text("garbage\n")
    argv = hub_command("serve", "--port", str(free_port()), "--metrics-port", "0")
    process = ManagedProcess([*argv, "--tls-cert", str(tmp_path / "not-a-cert.pem")], name="hub-bad-tls").start()
    try:
        deadline = time.monotonic() + 15
        while process.is_running() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.returncode == 2
        assert "configuration error: cannot use the TLS certificate/key" in process.output()
    finally:
        process.close()


@pytest.mark.cluster
async def test_ws_and_ingest_nodes_over_redis_both_serve_tls(
    certs: dict[str, Path], tls_js: JsClients, auth: AuthServer, tmp_path: Path
) -> None:
    require_executable("redis-server")
    with RedisServer() as redis:
        ws, ws_port, _ = start_tls_hub("ws", certs, tmp_path, "--redis-url", redis.url)
        ingest, api_port, ingest_metrics = start_tls_hub("ingest", certs, tmp_path, "--redis-url", redis.url)
        try:
            channel = unique("private-cluster-secure")
            await wss_client(tls_js, "a", ws_port, auth, channel)

            await asyncio.to_thread(https_sdk(api_port, certs["ca"]).trigger, channel, "via-ingest", {"n": 3})

            await tls_js.wait_for("a", source="channel", channel=channel, event="via-ingest")
            assert https_ready(f"https://{LOOPBACK}:{ingest_metrics}/metrics", certs["ca"])()
        finally:
            for process in (ingest, ws):
                await process.stop_async()
                process.close()
