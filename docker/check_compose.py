"""Validate compose files against the Compose specification, offline.

    python docker/check_compose.py docker-compose.yml docker-compose.cpu.yml

Each file is checked with check-jsonschema's vendored copy of the compose-spec schema
(``--builtin-schema vendor.compose-spec``: nothing is fetched). Compose's merge tags ``!reset`` and
``!override``, which an override file needs to remove or replace a list of the base file and which
no plain YAML loader knows, are read as the value they carry; each file is handed to
check-jsonschema as that JSON. Exits with check-jsonschema's status: non-zero when a file is
invalid.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

SCHEMA = "vendor.compose-spec"
MERGE_TAGS = ("!reset", "!override")


class ComposeLoader(yaml.SafeLoader):
    """YAML as Compose reads it, merge tags included (their values, untagged)."""


def _untagged(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    # A scalar (``!reset null``): the value it would have untagged.
    return yaml.safe_load(node.value) if isinstance(node, yaml.ScalarNode) else None


for _tag in MERGE_TAGS:
    ComposeLoader.add_constructor(_tag, _untagged)


def load(path: Path) -> Any:
    with path.open(encoding="utf-8") as file:
        return yaml.load(file, Loader=ComposeLoader)


def check(paths: Sequence[Path]) -> int:
    with tempfile.TemporaryDirectory(prefix="check-compose-") as tmp:
        instances = []
        for i, path in enumerate(paths):
            instance = Path(tmp) / f"{i}-{path.name}.json"
            instance.write_text(json.dumps(load(path)), encoding="utf-8")
            print(f"{path}: checked as {instance.name}", flush=True)
            instances.append(str(instance))
        command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", SCHEMA]
        return subprocess.run([*command, *instances], check=False).returncode


def main(argv: Sequence[str] | None = None) -> int:
    paths = [Path(arg) for arg in (sys.argv[1:] if argv is None else argv)]
    if not paths:
        print("usage: check_compose.py COMPOSE_FILE...", file=sys.stderr)
        return 2
    return check(paths)


if __name__ == "__main__":
    raise SystemExit(main())
