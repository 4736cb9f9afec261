"""``hub apps``: list, add, change, disable and remove apps through a node's admin API, from a terminal.

    hub apps list                                  # HUB_ADMIN_URL (http://127.0.0.1:9602), HUB_ADMIN_TOKEN
    hub apps add id=7 enable_client_messages=true  # key and secret made up when not given; prints the app
    hub apps set 7 secret=new-secret max_connections=500
    hub apps disable 7 / hub apps enable 7 / hub apps remove 7
    hub apps migrate                               # create or upgrade the PostgreSQL table (HUB_POSTGRES_URL)

``field=value`` values are JSON when they parse as JSON (``true``, ``5``, ``[...]``), text otherwise; ids,
keys and secrets are always text. Exit status: 0 done, 1 refused or unreachable, 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hub.apps import ConfigError

DEFAULT_ADMIN_URL = "http://127.0.0.1:9602"
_TEXT_FIELDS = {"id", "key", "secret", "encryption_master_key_base64"}


class CliError(Exception):
    """A refusal or failure to print as one line (exit 1)."""


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--admin-url",
        default=env.get("HUB_ADMIN_URL", DEFAULT_ADMIN_URL),
        help=f"a node's admin API [env HUB_ADMIN_URL, default {DEFAULT_ADMIN_URL}]",
    )
    common.add_argument("--admin-token", default=env.get("HUB_ADMIN_TOKEN"), help="[env HUB_ADMIN_TOKEN]")
    common.add_argument(
        "--admin-token-file", default=env.get("HUB_ADMIN_TOKEN_FILE"), help="[env HUB_ADMIN_TOKEN_FILE]"
    )
    parser = argparse.ArgumentParser(prog="hub apps", description="Manage apps through a node's admin API.")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])

    command("list", "every app: id, key, enabled").add_argument(
        "--json", action="store_true", help="the admin API's JSON instead of a table"
    )
    command("get", "one app as JSON").add_argument("id")
    command("add", "create an app from field=value pairs").add_argument("fields", nargs="*")
    setter = command("set", "change fields of an app")
    setter.add_argument("id")
    setter.add_argument("fields", nargs="+")
    command("disable", "refuse its sockets and API calls, close its open sockets").add_argument("id")
    command("enable", "serve it again").add_argument("id")
    command("remove", "delete an app").add_argument("id")
    migrate = sub.add_parser("migrate", help="create or upgrade the postgres app store's table")
    migrate.add_argument("--postgres-url", default=env.get("HUB_POSTGRES_URL"), help="[env HUB_POSTGRES_URL]")
    migrate.add_argument(
        "--postgres-table", default=env.get("HUB_POSTGRES_TABLE", "apps"), help="[env HUB_POSTGRES_TABLE]"
    )
    return parser


def parse_fields(pairs: Sequence[str]) -> dict[str, Any]:
    """``field=value`` pairs as a JSON object (values JSON when they parse, text otherwise)."""
    fields: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"expected field=value, got {pair!r}")
        if name in _TEXT_FIELDS:
            fields[name] = raw
            continue
        try:
            fields[name] = json.loads(raw)
        except ValueError:
            fields[name] = raw
    return fields


def _token(args: argparse.Namespace) -> str:
    if args.admin_token:
        return str(args.admin_token)
    if args.admin_token_file:
        try:
            return Path(args.admin_token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read admin token file {args.admin_token_file}: {exc}") from None
    raise ConfigError("give the admin token: HUB_ADMIN_TOKEN, --admin-token or --admin-token-file")


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    url = args.admin_url.rstrip("/") + path
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {_token(args)}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
    except urllib.error.HTTPError as err:
        try:
            error = json.loads(err.read())
            message = f"{error['code']} {error['error']}" + (f" (field {error['field']})" if "field" in error else "")
        except (ValueError, KeyError, TypeError):
            message = f"{err.code} {err.reason}"
        raise CliError(message) from None
    except OSError as exc:
        raise CliError(f"cannot reach the admin API at {url}: {exc}") from None
    return json.loads(raw) if raw else None


def _print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True))


def _run(args: argparse.Namespace) -> None:
    command = args.command
    if command == "migrate":
        _migrate(args.postgres_url, args.postgres_table)
    elif command == "list":
        doc = _call(args, "GET", "/api/apps")
        if args.json:
            _print_json(doc)
            return
        print(f"{'id':<14} {'key':<24} enabled   ({doc['store']} store{'' if doc['writable'] else ', read-only'})")
        for app in doc["apps"]:
            print(f"{app['id']:<14} {app['key']:<24} {'yes' if app['enabled'] else 'no'}")
    elif command == "get":
        _print_json(_call(args, "GET", f"/api/apps/{_quote(args.id)}"))
    elif command == "add":
        _print_json(_call(args, "POST", "/api/apps", parse_fields(args.fields)))
    elif command == "set":
        _print_json(_call(args, "PATCH", f"/api/apps/{_quote(args.id)}", parse_fields(args.fields)))
    elif command in ("disable", "enable"):
        _print_json(_call(args, "POST", f"/api/apps/{_quote(args.id)}/{command}"))
    elif command == "remove":
        _call(args, "DELETE", f"/api/apps/{_quote(args.id)}")
        print(f"removed app {args.id}")


def _quote(app_id: str) -> str:
    return urllib.parse.quote(app_id, safe="")


def _migrate(url: str | None, table: str) -> None:
    if not url:
        raise ConfigError("hub apps migrate needs --postgres-url (or HUB_POSTGRES_URL)")
    import psycopg

    from hub.appstore.postgres import migrate

    try:
        done = asyncio.run(migrate(url, table))
    except psycopg.Error as exc:
        raise CliError(f"migration failed: {exc}") from None
    for line in done:
        print(f"upgraded {line}")
    print(f"table {table} is ready")


def main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Entry point of ``hub apps ...``."""
    args = _parser(env).parse_args(list(argv))
    try:
        _run(args)
    except ConfigError as exc:
        print(f"hub apps: {exc}", file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"hub apps: {exc}", file=sys.stderr)
        return 1
    return 0
