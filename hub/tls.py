"""TLS on the node's own ports, for deployments without a TLS-terminating load balancer.

One server context serves every port of a node (clients and API, metrics, admin). ``reload`` reads
the files again into that same live context: handshakes after it present the new certificate, and
connections already open keep theirs, so renewing a certificate (SIGHUP) drops no client.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hub.apps import ConfigError


@dataclass(frozen=True)
class TlsFiles:
    """Where the certificate (plus optional chain) and its key are read from."""

    cert: str
    key: str | None = None
    chain: str | None = None
    key_password: str | None = None

    def load_into(self, context: ssl.SSLContext) -> None:
        """Load the files into ``context``; ConfigError (naming the file) when they cannot be used."""
        try:
            if self.chain is None:
                context.load_cert_chain(self.cert, self.key, self.key_password)
                return
            # OpenSSL reads a chain only from the certificate's own file: join them in a private temp file.
            with tempfile.TemporaryDirectory(prefix="hub-tls-") as directory:
                joined = Path(directory) / "chain.pem"
                joined.write_bytes(_with_newline(Path(self.cert).read_bytes()) + Path(self.chain).read_bytes())
                os.chmod(joined, 0o600)
                context.load_cert_chain(str(joined), self.key or self.cert, self.key_password)
        except (OSError, ssl.SSLError) as exc:
            names = ", ".join(f for f in (self.cert, self.key, self.chain) if f)
            raise ConfigError(f"cannot use the TLS certificate/key ({names}): {exc}") from None


def _with_newline(pem: bytes) -> bytes:
    return pem if pem.endswith(b"\n") else pem + b"\n"


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """A TLS 1.2+ server context holding the certificate; ConfigError when the files are unusable."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    files.load_into(context)
    return context


def reload(context: ssl.SSLContext, files: TlsFiles) -> None:
    """Re-read the files into the live ``context``; on ConfigError the context keeps what it had.

    The files are tried on a scratch context first: a key that fails to match after the certificate
    was already swapped in would leave the live context unable to complete any handshake.
    """
    server_context(files)
    files.load_into(context)
