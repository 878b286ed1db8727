"""`compresso keys ...` and `compresso tenants ...`: administration run on the server's machine,
straight against its database (these commands need no running API and no key)."""

import argparse
import json
import sys
from typing import Any

from app.core.errors import AppError
from app.db.base import utcnow
from app.db.session import session_scope
from app.tenants import repository, service


def add_admin_commands(commands: argparse._SubParsersAction) -> None:
    keys = commands.add_parser("keys", help="create, list and revoke API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create a key (and its tenant when new); prints the key once")
    create.add_argument("--tenant", required=True, help="tenant name; created if it does not exist")
    create.add_argument("--name", help="a label for the key, e.g. the pipeline that uses it")
    create.add_argument("--expires-in-days", type=float, help="the key stops working after this many days")
    create.add_argument("--json", action="store_true", help='print {"key": ..., ...} instead of text')
    listing = keys.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--tenant", help="only this tenant's keys")
    listing.add_argument("--json", action="store_true")
    revoke = keys.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key", help="the key's id or prefix, as `keys list` shows")
    revoke.add_argument("--json", action="store_true")

    tenants = commands.add_parser("tenants", help="tenant limits").add_subparsers(dest="tenants_command", required=True)
    limits = tenants.add_parser("limits", help="show or set a tenant's limits (empty: the settings' defaults)")
    limits.add_argument("tenant", help="tenant name")
    limits.add_argument("--max-concurrent-jobs", type=int, help="queued plus running jobs; 0 resets to the default")
    limits.add_argument("--max-storage-bytes", type=int, help="bytes stored; 0 resets to the default")
    limits.add_argument("--json", action="store_true")


def _key_row(key, tenant) -> dict[str, Any]:  # noqa: ANN001
    return {
        "id": key.id,
        "prefix": key.prefix,
        "tenant": tenant.name,
        "name": key.name,
        "state": service.key_state(key, utcnow()),
        "created_at": key.created_at.isoformat(),
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
        "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
    }


def _print(as_json: bool, payload: Any, text: str) -> None:
    print(json.dumps(payload, indent=2) if as_json else text)


def _keys(args: argparse.Namespace) -> None:
    with session_scope() as session:
        if args.keys_command == "create":
            key, tenant, secret = service.create_key(session, args.tenant, args.name, args.expires_in_days)
            row = _key_row(key, tenant)
            expiry = f", expires {row['expires_at']}" if key.expires_at else ""
            # The key alone on the last line, so `| tail -n 1` captures it.
            _print(args.json, {"key": secret, **row},
                   f"API key {key.prefix} for tenant {tenant.name!r}{expiry}. It is shown once; store it now:\n{secret}")
        elif args.keys_command == "list":
            tenant_id = None
            if args.tenant is not None:
                tenant = repository.by_name(session, args.tenant)
                if tenant is None:
                    raise AppError(f"No tenant is named {args.tenant!r}.")
                tenant_id = tenant.id
            rows = [_key_row(key, tenant) for key, tenant in repository.list_keys(session, tenant_id)]
            lines = [f"{r['prefix']}  {r['state']:8}  {r['tenant']}  {r['name'] or ''}  (id {r['id']})" for r in rows]
            _print(args.json, rows, "\n".join(lines) if lines else "No API keys.")
        else:
            key = service.revoke_key(session, args.key)
            row = _key_row(key, repository.get(session, key.tenant_id))
            _print(args.json, row, f"Revoked API key {key.prefix} of tenant {row['tenant']!r}.")


def _tenants(args: argparse.Namespace) -> None:
    with session_scope() as session:
        tenant = repository.by_name(session, args.tenant)
        if tenant is None:
            raise AppError(f"No tenant is named {args.tenant!r}; `compresso keys create --tenant NAME` creates one.")
        for value in (args.max_concurrent_jobs, args.max_storage_bytes):
            if value is not None and value < 0:
                raise AppError("Limits are positive, or 0 to go back to the settings' default.")
        if args.max_concurrent_jobs is not None:
            tenant.max_concurrent_jobs = args.max_concurrent_jobs or None
        if args.max_storage_bytes is not None:
            tenant.max_storage_bytes = args.max_storage_bytes or None
        row = {
            "tenant": tenant.name,
            "max_concurrent_jobs": tenant.max_concurrent_jobs,
            "max_storage_bytes": tenant.max_storage_bytes,
        }
        _print(args.json, row, "  ".join(f"{k}={'default' if v is None else v}" for k, v in row.items()))


def run_admin_command(args: argparse.Namespace) -> None:
    try:
        _keys(args) if args.command == "keys" else _tenants(args)
    except AppError as exc:
        print(f"compresso: {exc.detail}", file=sys.stderr)
        raise SystemExit(2) from exc
