"""Ctrl-C still drains `hub serve` where the event loop cannot watch signals, as on Windows.

Simulated on Linux: a real `hub serve` process whose event loop refuses `add_signal_handler`
(NotImplementedError, as Windows' loops do) and whose `signal` module has no SIGHUP (Windows has none).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from tests.support.ports import LOOPBACK, free_port
from tests.support.processes import ManagedProcess, http_ready
from tests.support.topology import write_apps_file

# Runs hub's own entry point after making the platform look like Windows to it.
AS_ON_WINDOWS = """
import asyncio, signal, sys
def refuse(self, *args, **kwargs):
    raise NotImplementedError
asyncio.unix_events._UnixSelectorEventLoop.add_signal_handler = refuse
del signal.SIGHUP
from hub.cli import main
sys.exit(main(sys.argv[1:]))
"""


def start_as_on_windows(tmp_path: Path, port: int) -> ManagedProcess:
    apps = write_apps_file(tmp_path)
    argv = [sys.executable, "-c", AS_ON_WINDOWS, "serve", "--host", LOOPBACK, "--port", str(port)]
    argv += ["--metrics-port", "0", "--apps-file", str(apps), "--drain-seconds", "0.5", "--log-format", "json"]
    process = ManagedProcess(argv, name=f"hub-windows-{port}").start()
    process.wait_ready(http_ready(f"http://{LOOPBACK}:{port}/ready"))
    return process


def test_ctrl_c_drains_and_exits_0_where_the_loop_cannot_add_signal_handlers(tmp_path: Path) -> None:
    with start_as_on_windows(tmp_path, free_port()) as process:
        code = process.stop(sig=signal.SIGINT, timeout=15)  # SIGKILL after 15 s would give -9
        output = process.output()
    assert code == 0, output
    assert "stop_signals_fallback" in output  # the simulation took: the loop refused, signal.signal stood in
    assert "drain_requested" in output and "node_stopped" in output
    assert "Traceback" not in output
