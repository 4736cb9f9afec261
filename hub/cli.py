"""The ``hub`` command: ``hub serve | ws | ingest`` (drained on SIGTERM/Ctrl-C), and ``hub soketi-config``."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Mapping, Sequence

import structlog

from hub import apps_cli
from hub.apps import AppRegistry, ConfigError
from hub.config import Settings, parse_settings, unknown_variables
from hub.logging import configure_logging
from hub.server import Node
from hub.signals import watch_reload_signal, watch_stop_signals
from hub.soketi_config import hub_setup, soketi_setup

log = structlog.get_logger("hub")


async def run(settings: Settings, env: Mapping[str, str]) -> int:
    """Run a node until SIGTERM/SIGINT; the first signal drains, a second one stops at once.

    SIGHUP re-reads the apps (of a file, Redis or PostgreSQL store) and the TLS certificate and key.
    """
    node = Node(settings, env)
    try:
        await node.start()
    except ConfigError:
        await node.backends.close()  # the apps load first: nothing else was started yet
        raise
    report_unused_app_settings(node.apps)
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

    reloads: set[asyncio.Task[bool]] = set()

    def on_hangup() -> None:
        log.info("reload_requested", signal="SIGHUP")
        if settings.tls_cert:
            node.reload_tls()
        task = loop.create_task(node.store.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    if watch_stop_signals(loop, on_signal) == "signal":
        log.info("stop_signals_fallback", reason="the event loop cannot watch signals; Python's handler passes them on")
    if not watch_reload_signal(loop, on_hangup) and settings.tls_cert:
        log.warning("tls_reload_unavailable", reason="no SIGHUP here: restart the node to load a new certificate")
    await stop.wait()
    await node.drain()
    return 0


def report_soketi_setup(settings: Settings) -> None:
    """One log line saying a Soketi setup was read, and one naming every Soketi option hub does not apply."""
    soketi = settings.soketi
    assert soketi is not None
    log.info("soketi_config_read", path=settings.soketi_config, apps=len(soketi.apps), options=sorted(soketi.options))
    if soketi.not_applied:
        log.warning("soketi_options_not_applied", options="; ".join(soketi.not_applied))


def report_unused_app_settings(apps: AppRegistry) -> None:
    """Name the apps-file settings the server accepts but has no use for, so none goes unnoticed."""
    keyed = sorted(app.id for app in apps if app.encryption_master_key_base64)
    if keyed:
        log.warning(
            "app_setting_not_used",
            setting="encryption_master_key_base64",
            app_ids=keyed,
            reason="private-encrypted- channels are end-to-end: the server relays ciphertext; the key belongs "
            "in your backend SDK",
        )


def print_soketi_setup(args: Sequence[str], env: Mapping[str, str]) -> int:
    """``hub soketi-config FILE``: the equivalent apps file on stdout, the flags and what is left out on stderr."""
    parser = argparse.ArgumentParser(prog="hub soketi-config", description="Print the hub setup of a Soketi config.")
    parser.add_argument("path", help="Soketi config file; SOKETI_* variables are read too")
    path = parser.parse_args(list(args)).path
    translation = soketi_setup(path, env)
    assert translation is not None  # a config file always makes a setup
    apps, command, not_applied = hub_setup(translation)
    if apps is None:
        print(f"# the apps stay in the PostgreSQL table; run:\n{command}", file=sys.stderr)
    else:
        print(apps)
        print(f"# save the apps above as apps.json, then run:\n{command}", file=sys.stderr)
    if "redis_url" in translation.options:
        print("# (hub ws and hub ingest take the same flags, for a cluster over that Redis)", file=sys.stderr)
    for line in not_applied:
        print(f"# not applied: {line}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hub`` console script."""
    env = dict(os.environ)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["soketi-config"]:
            return print_soketi_setup(args[1:], env)
        if args[:1] == ["apps"]:
            return apps_cli.main(args[1:], env)
        settings = parse_settings(args, env)
    except ConfigError as exc:
        print(f"hub: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    if settings.soketi is not None:
        report_soketi_setup(settings)
    if unknown := unknown_variables(env):
        log.warning("unknown_variables", variables=unknown, reason="no hub option reads them")
    try:
        return asyncio.run(run(settings, env))
    except KeyboardInterrupt:
        # Ctrl-C before the stop handlers were in place (or where none could be): stop without a traceback.
        print("hub: interrupted", file=sys.stderr)
        return 130
    except ConfigError as exc:
        print(f"hub: configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"hub: cannot start: {exc}", file=sys.stderr)
        return 1
