"""``dataset-audit serve``, ``keys`` and ``tenants``: the administrator's verbs. ``keys`` and
``tenants`` work on the database directly (``DATABASE_URL``, or the embedded one under
``--data-dir``), bringing it to the newest schema first, so they run on the API's host or in its
container."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import make_url

from app.db import make_engine, make_sessionmaker, transaction
from app.migrate import upgrade
from app.services import access
from app.settings import Settings, get_settings

SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def add_verbs(verbs: Any) -> None:
    serve = verbs.add_parser(
        "serve",
        help="run the service here: the API and one worker (SQLite and no broker server "
        "unless DATABASE_URL and BROKER_URL say otherwise)",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--data-dir", type=Path, help="database, queue and uploads (default: $DATA_DIR or "
        "~/.local/share/dataset-audit)"
    )  # fmt: skip
    serve.add_argument(
        "--auth", action="store_true",
        help="require API keys (make them with 'dataset-audit keys create'); the same as AUTH=true",
    )  # fmt: skip
    serve.set_defaults(handler=_serve)

    keys = verbs.add_parser("keys", help="make, list and revoke API keys (administrators)")
    key_verbs = keys.add_subparsers(dest="keys_verb", required=True, metavar="ACTION")
    create = key_verbs.add_parser(
        "create", help="make a key for a tenant (made if new); prints the key last"
    )
    create.add_argument("--tenant", required=True, help="the team the key acts for")
    create.add_argument("--name", help="what the key is for, to know it by in 'keys list'")
    _data_dir_option(create)
    create.set_defaults(handler=_keys_create)
    listing = key_verbs.add_parser("list", help="the keys (never their secrets)")
    listing.add_argument("--tenant", help="only this tenant's keys")
    _data_dir_option(listing)
    listing.set_defaults(handler=_keys_list)
    revoke = key_verbs.add_parser("revoke", help="stop a key from working")
    revoke.add_argument("key", metavar="KEY_ID", help="the key's id (from 'keys list') or the key")
    _data_dir_option(revoke)
    revoke.set_defaults(handler=_keys_revoke)

    tenants = verbs.add_parser("tenants", help="tenants' usage and quotas (administrators)")
    tenant_verbs = tenants.add_subparsers(dest="tenants_verb", required=True, metavar="ACTION")
    tenant_list = tenant_verbs.add_parser("list", help="each tenant's usage against its quotas")
    _data_dir_option(tenant_list)
    tenant_list.set_defaults(handler=_tenants_list)
    quota = tenant_verbs.add_parser(
        "set", help="set a tenant's quotas (made if new, with its webhook secret, shown once)"
    )
    quota.add_argument("tenant")
    quota.add_argument(
        "--max-active-audits", type=int, metavar="N", help="audits queued or running at once"
    )
    quota.add_argument(
        "--max-stored", type=parse_size, metavar="SIZE",
        help="uploads kept (bytes, or with K, M, G, T: 500G)",
    )  # fmt: skip
    quota.add_argument(
        "--rotate-webhook-secret", action="store_true",
        help="make a new secret for the tenant's webhook signatures, and print it (the old one "
        "stops working)",
    )  # fmt: skip
    _data_dir_option(quota)
    quota.set_defaults(handler=_tenants_set)


def parse_size(text: str) -> int:
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1:] if value[-1:] in SIZE_UNITS else ""
    number = value[: len(value) - len(unit)]
    try:
        size = float(number) * SIZE_UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 500G)") from None
    if size < 0:
        raise argparse.ArgumentTypeError(f"a size cannot be negative: {text!r}")
    return int(size)


def _serve(args: argparse.Namespace) -> int:
    from app.serve import serve

    return serve(host=args.host, port=args.port, data_dir=args.data_dir, auth=args.auth)


def _data_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path,
        help="the embedded service's data (default: $DATABASE_URL, else $DATA_DIR or "
        "~/.local/share/dataset-audit)",
    )  # fmt: skip


def _settings(args: argparse.Namespace) -> Settings:
    """The service's settings, after saying which database they name. Without --data-dir or
    DATABASE_URL, a default embedded database that does not exist yet is an error, not a new
    empty one: keys made there would not reach the service the user meant."""
    if args.data_dir is not None:
        os.environ["DATA_DIR"] = str(args.data_dir.resolve())
        get_settings.cache_clear()
    settings = get_settings()
    url = make_url(settings.resolved_database_url)
    if settings.database_url is None:
        database = Path(url.database or "")
        if args.data_dir is None and not database.exists():
            raise ValueError(
                f"no service database at {database}: start the service there first "
                "('dataset-audit serve --data-dir DIR'), or name it with --data-dir or "
                "DATABASE_URL"
            )
        print(f"Database: {database}", file=sys.stderr)
    else:
        print(f"Database: {url.render_as_string(hide_password=True)}", file=sys.stderr)
    upgrade(settings.resolved_database_url)
    return settings


def _run(args: argparse.Namespace, work: Any) -> Any:
    settings = _settings(args)
    engine = make_engine(settings.resolved_database_url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            return work(session, settings)
    finally:
        engine.dispose()


def _keys_create(args: argparse.Namespace) -> int:
    def create(session: Any, _: Settings) -> str:
        new_tenant = not access.tenant_exists(session, args.tenant)
        row, key = access.create_key(session, args.tenant, args.name)
        made = f"Created API key {row.id} for tenant {row.tenant!r}. It is shown only now:\n{key}"
        if not new_tenant:
            return made
        # The key stays the last word: scripts take it from there.
        return f"{_secret_text(row.tenant, access.webhook_secret(session, row.tenant))}\n{made}"

    print(_run(args, create))
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    def rows(session: Any, _: Settings) -> list[list[str]]:
        return [
            [
                key.id,
                key.tenant,
                key.name or "",
                f"{key.created_at:%Y-%m-%d %H:%M}",
                f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active",
            ]
            for key in access.list_keys(session, args.tenant)
        ]

    _print_table(["ID", "TENANT", "NAME", "CREATED", "STATE"], _run(args, rows))
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    def revoke(session: Any, settings: Settings) -> str:
        row = access.revoke_key(session, args.key)
        wait = f" (API processes forget it within {settings.auth_cache_s:g} s)"
        return f"Revoked API key {row.id} of tenant {row.tenant!r}{wait}."

    print(_run(args, revoke))
    return 0


def _tenants_list(args: argparse.Namespace) -> int:
    def rows(session: Any, settings: Settings) -> list[list[str]]:
        return [
            [
                use.tenant,
                f"{use.active_audits}/{use.max_active_audits}",
                f"{access.format_bytes(use.stored_bytes)}/"
                f"{access.format_bytes(use.max_stored_bytes)}",
            ]
            for use in access.list_usage(session, settings)
        ]

    _print_table(["TENANT", "ACTIVE AUDITS", "STORED"], _run(args, rows))
    return 0


def _tenants_set(args: argparse.Namespace) -> int:
    for value, flag in ((args.max_active_audits, "--max-active-audits"),):
        if value is not None and value < 0:
            raise ValueError(f"{flag} cannot be negative")

    def set_quota(session: Any, settings: Settings) -> str:
        new_tenant = not access.tenant_exists(session, args.tenant)
        access.set_quota(
            session, args.tenant,
            max_active_audits=args.max_active_audits, max_stored_bytes=args.max_stored,
        )  # fmt: skip
        use = access.usage(session, args.tenant, settings)
        done = (
            f"Tenant {use.tenant!r}: at most {use.max_active_audits} active audits and "
            f"{access.format_bytes(use.max_stored_bytes)} stored."
        )
        if args.rotate_webhook_secret:
            secret = access.rotate_webhook_secret(session, args.tenant)
        elif new_tenant:
            secret = access.webhook_secret(session, args.tenant)
        else:
            return done
        return f"{done}\n{_secret_text(use.tenant, secret)}"

    print(_run(args, set_quota))
    return 0


def _secret_text(tenant: str, secret: str) -> str:
    """A webhook secret, shown once: as the last word, for scripts."""
    return (
        f"Webhook secret of tenant {tenant!r} (receivers check X-Audit-Signature with it; "
        f"'tenants set {tenant} --rotate-webhook-secret' makes a new one). It is shown only "
        f"now:\n{secret}"
    )


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    if not rows:
        print("(none)")
        return
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
