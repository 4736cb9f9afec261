"""HTTP API query parameters signed by hand, with the `pusher` SDK's own helpers (`make_query_string`, `sign`).

For requests the SDK will not make (bodies it refuses to build, endpoints it lacks, answers it hides)
and for requests that break exactly one part of a valid signature.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping

from pusher.http import make_query_string
from pusher.signature import sign

from tests.support.topology import APP_KEY, APP_SECRET


def signed_params(
    method: str,
    path: str,
    body: bytes,
    *,
    key: str = APP_KEY,
    secret: str = APP_SECRET,
    timestamp: float | None = None,
    body_md5: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Query parameters signed as the Python SDK signs: body_md5 on every request, GET included."""
    params = {
        **(extra or {}),
        "auth_key": key,
        "auth_timestamp": "%.0f" % (time.time() if timestamp is None else timestamp),
        "auth_version": "1.0",
        "body_md5": hashlib.md5(body).hexdigest() if body_md5 is None else body_md5,
    }
    params["auth_signature"] = sign(secret, "\n".join([method, path, make_query_string(params)]))
    return params
