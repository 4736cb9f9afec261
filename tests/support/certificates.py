"""Throwaway certificates made with openssl: a test CA and server certificates for 127.0.0.1 it signs.

Callers skip (or fail in CI) when openssl is missing, through ``require_executable``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.requirements import require_executable

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _run(directory: Path, *command: str | Path) -> None:
    subprocess.run([str(part) for part in command], check=True, capture_output=True, cwd=directory)


def make_certificates(directory: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it (EC keys: fast to make).

    Keys of the result: ``ca``, ``ca-key``, ``server``, ``server-key`` (and the ``csr`` it came from).
    """
    openssl = require_executable("openssl")
    files = {name: directory / f"{name}.pem" for name in ("ca", "ca-key")}
    _run(directory, openssl, "req", "-x509", *_EC, "-keyout", files["ca-key"], "-out", files["ca"], "-days", "1",
         "-subj", "/CN=hub test CA")  # fmt: skip
    files.update(issue_server_certificate(directory, files, "server", "localhost"))
    return files


def issue_server_certificate(directory: Path, ca: dict[str, Path], name: str, common_name: str) -> dict[str, Path]:
    """Another server certificate for 127.0.0.1 from the same CA, as ``name``, ``name-key`` and ``csr``."""
    openssl = require_executable("openssl")
    files = {
        name: directory / f"{name}.pem",
        f"{name}-key": directory / f"{name}-key.pem",
        "csr": directory / "csr.pem",
    }
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _run(
        directory,
        openssl,
        "req",
        *_EC,
        "-keyout",
        files[f"{name}-key"],
        "-out",
        files["csr"],
        "-subj",
        f"/CN={common_name}",
    )
    _run(directory, openssl, "x509", "-req", "-in", files["csr"], "-CA", ca["ca"], "-CAkey", ca["ca-key"],
         "-CAcreateserial", "-extfile", ext, "-out", files[name], "-days", "1")  # fmt: skip
    return files
