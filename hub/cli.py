"""The ``hub`` command: ``hub serve | ws | ingest``, with graceful drain on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence

import structlog

from hub.apps import AppRegistry, ConfigError
from hub.config import Settings, load_apps, parse_settings
from hub.logging import configure_logging
from hub.server import Node

log = structlog.get_logger("hub")


async def run(settings: Settings, apps: AppRegistry) -> int:
    """Run a node until SIGTERM/SIGINT; the first signal drains, a second one stops at once.

    SIGHUP re-reads the TLS certificate and key.
    """
    node = Node(settings, apps)
    await node.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.warning("forced_exit", signal=signal.Signals(signum).name)
            os._exit(1)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    loop.add_signal_handler(signal.SIGHUP, node.reload_tls)
    await stop.wait()
    await node.drain()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hub`` console script."""
    env = dict(os.environ)
    try:
        settings = parse_settings(sys.argv[1:] if argv is None else argv, env)
        apps = load_apps(settings, env)
    except ConfigError as exc:
        print(f"hub: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    try:
        return asyncio.run(run(settings, apps))
    except ConfigError as exc:
        print(f"hub: configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"hub: cannot start: {exc}", file=sys.stderr)
        return 1
