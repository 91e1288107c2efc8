"""``dataset-audit``: the command line. One module per room: ``local`` (the engine run here),
``admin`` (the service's host), ``client_verbs`` (a running service)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from app.cli import admin, client_verbs, local
from app.cli.shared import EXIT_ERROR
from app.formats import DatasetError


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from dataset_audit.client import AuditClientError

    try:
        return int(args.handler(args))
    except (DatasetError, ValueError, AuditClientError, TimeoutError) as exc:
        print(f"dataset-audit: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("dataset-audit: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dataset-audit",
        description="Find backdoor-poisoned samples in an image-classification dataset.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    # The order of 'dataset-audit --help': scan, demo, serve, keys, tenants, submit, ..., ci.
    local.add_verbs(verbs)
    admin.add_verbs(verbs)
    client_verbs.add_verbs(verbs)
    return parser
