"""Write the project's runtime dependencies, read from pyproject.toml, as a pip requirements file.

The Dockerfile installs dependencies before the source, for layer caching, and the API image
without torch; this keeps ``[project].dependencies`` the only list of them::

    python docker/requirements.py --exclude torch --extra s3 -o api.txt  # all but torch, and s3fs
    python docker/requirements.py --only torch -o torch.txt               # torch alone, as pinned

Standard library only: it runs in a bare ``python`` build stage.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path

# PEP 508: a requirement starts with its project name.
_NAME = re.compile(r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")


def normalize(name: str) -> str:
    """PEP 503 normalized project name: ``Torch``, ``torch_`` ... compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = _NAME.match(requirement)
    if match is None:
        raise ValueError(f"not a PEP 508 requirement: {requirement!r}")
    return normalize(match.group(1))


def dependencies(pyproject: Path, extras: Sequence[str] = ()) -> list[str]:
    """``[project].dependencies``, then those of the optional ``extras``."""
    with pyproject.open("rb") as file:
        project = tomllib.load(file)["project"]
    optional = project.get("optional-dependencies", {})
    unknown = sorted(set(extras) - set(optional))
    if unknown:
        raise ValueError(f"not in [project.optional-dependencies]: {', '.join(unknown)}")
    return [*project["dependencies"], *(r for extra in extras for r in optional[extra])]


def select(
    requirements: Iterable[str], *, exclude: Sequence[str] = (), only: Sequence[str] = ()
) -> list[str]:
    """The requirements named in ``only`` (all when empty) minus those in ``exclude``. Every name
    given must be a dependency: a misspelt or dropped name fails instead of selecting silently."""
    requirements = list(requirements)
    names = {requirement_name(r) for r in requirements}
    wanted, unwanted = {normalize(n) for n in only}, {normalize(n) for n in exclude}
    unknown = sorted((wanted | unwanted) - names)
    if unknown:
        raise ValueError(f"not in [project].dependencies: {', '.join(unknown)}")
    return [
        r
        for r in requirements
        if (not wanted or requirement_name(r) in wanted) and requirement_name(r) not in unwanted
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    parser.add_argument("--exclude", action="append", default=[], metavar="NAME")
    parser.add_argument("--only", action="append", default=[], metavar="NAME")
    parser.add_argument("--extra", action="append", default=[], metavar="EXTRA")
    parser.add_argument("-o", "--output", type=Path, help="default: standard output")
    args = parser.parse_args(argv)
    try:
        requirements = dependencies(args.pyproject, args.extra)
        selected = select(requirements, exclude=args.exclude, only=args.only)
    except ValueError as exc:
        parser.error(str(exc))
    text = "".join(f"{r}\n" for r in selected)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
