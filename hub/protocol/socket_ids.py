"""Socket ids: two unsigned integers joined by a dot, from a CSPRNG."""

from __future__ import annotations

import re
import secrets

# ASCII digits only: in a Python str pattern ``\d`` also matches other scripts' digits such as "\u0661".
SOCKET_ID_RE = re.compile(r"[0-9]+\.[0-9]+")


def new_socket_id() -> str:
    """A fresh socket id that cannot be predicted from earlier ones."""
    return f"{secrets.randbelow(10**10)}.{secrets.randbelow(10**10)}"


def is_socket_id(value: object) -> bool:
    """Whether ``value`` has the ``^\\d+\\.\\d+$`` shape every server library validates."""
    return isinstance(value, str) and SOCKET_ID_RE.fullmatch(value) is not None
