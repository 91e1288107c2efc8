"""What the command line's verbs share: exit codes, the data and ``--server`` options, the
client, audit ids and the per-class line. Light to import: every verb loads it."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from app.formats import DEFAULT_IMAGE_SIZE, MAX_IMAGE_SIZE
from app.formats.base import MIN_IMAGE_SIDE
from app.wording import class_name

if TYPE_CHECKING:
    from dataset_audit.client import AuditClient

EXIT_OK = 0
EXIT_ERROR = 2

DATA_HELP = ".npz (x: uint8 images, y: labels), ImageFolder .zip, or .parquet"


def server_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        help="the service's URL (default: $DATASET_AUDIT_SERVER or http://127.0.0.1:8000); "
        "an API key, where the service wants one, comes from $DATASET_AUDIT_API_KEY",
    )


def image_size_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image-size",
        type=_image_size,
        metavar="N",
        help="bring every image to N x N (short side scaled to N, centre cropped); default: "
        f"images of one size as they are, mixed sizes to {DEFAULT_IMAGE_SIZE}",
    )


def _image_size(text: str) -> int:
    digits = text.isascii() and text.isdigit() and len(text) <= 6
    if not (digits and MIN_IMAGE_SIDE <= int(text) <= MAX_IMAGE_SIZE):
        raise argparse.ArgumentTypeError(
            f"must be an integer from {MIN_IMAGE_SIDE} to {MAX_IMAGE_SIZE}; got {text!r}"
        )
    return int(text)


def client(args: argparse.Namespace) -> AuditClient:
    # Imported here: httpx is only for the verbs that talk to a server.
    from dataset_audit.client import AuditClient

    return AuditClient(args.server)


def audit_id(text: str) -> uuid.UUID:
    """An audit id from the command line, or a one-line error."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an audit id: ids are UUIDs, such as "
            "3f2b8c1e-0d4a-4e59-9a7b-2c6d1e8f0a13 ('dataset-audit submit' prints them)"
        ) from None


def class_line(
    label: int, n_flagged: int, n_samples: int, voted: int | None, names: Sequence[str] | None
) -> str:
    """``class 7 (sneaker): 34 of 400 flagged, most look like class 1 (trouser)``."""
    pointer = (
        f", most look like {class_name(voted, names)}"
        if voted is not None and voted != label
        else ""
    )
    return f"{class_name(label, names)}: {n_flagged} of {n_samples} flagged{pointer}"
