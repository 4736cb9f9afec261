"""Stop signals for the ``hub`` command, also where the event loop cannot watch them (Windows).

``loop.add_signal_handler`` exists only on POSIX event loops. Elsewhere Python's own ``signal.signal``
handler is used: it runs between bytecodes in the main thread and hands the signal to the loop with
``call_soon_threadsafe``, so Ctrl-C still drains the node. SIGHUP (TLS reload) does not exist on Windows.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def watch_stop_signals(loop: asyncio.AbstractEventLoop, on_signal: Callable[[int], None]) -> str:
    """Call ``on_signal(signum)`` in the loop on SIGTERM/SIGINT; return how (``"loop"`` or ``"signal"``)."""
    try:
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, on_signal, sig)
        return "loop"
    except NotImplementedError:

        def handler(signum: int, frame: FrameType | None) -> None:
            loop.call_soon_threadsafe(on_signal, signum)

        for sig in STOP_SIGNALS:
            signal.signal(sig, handler)
        return "signal"


def watch_reload_signal(loop: asyncio.AbstractEventLoop, on_reload: Callable[[], None]) -> bool:
    """Call ``on_reload()`` on SIGHUP where there is one and the loop can watch it; return whether it does."""
    hangup = getattr(signal, "SIGHUP", None)
    if hangup is None:
        return False
    try:
        loop.add_signal_handler(hangup, on_reload)
    except NotImplementedError:
        return False
    return True
