"""Write a compose override file that runs one worker per GPU of the host.

    python docker/gpu_workers.py --gpus 4 > docker-compose.gpus.yml
    docker compose -f docker-compose.yml -f docker-compose.gpus.yml up -d --build

    # a GPU host of the two-host deployment (docs/DEPLOY.md):
    python docker/gpu_workers.py --gpus 4 --base docker-compose.worker.yml > docker-compose.gpus.yml
    docker compose -f docker-compose.worker.yml -f docker-compose.gpus.yml up -d --build

``--gpus`` takes a count (GPUs 0 to N-1) or the GPUs' indices (``--gpus 1,3``). The base file's
``worker`` gets the first GPU; ``worker-gpuI`` services, which extend it, get one GPU each.

Compose has no way to say this with one service: replicas of a service that reserves
``count: 1`` all get the same GPU, the first, as Docker picks GPUs 0 to count-1 for each
container; a GPU of one's own takes a service of one's own, with its ``device_ids``. A device list
in an override file or an extending service is appended to the base one, hence ``!override``
(Compose v2.24.4 or newer; v2.26 or newer where the base service has ``depends_on``, as
docker-compose.yml's worker has).

Standard library only, like docker/requirements.py: it runs with the host's python3.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence


def gpu_ids(text: str) -> list[str]:
    """``"4"`` -> GPUs 0 to 3; ``"1,3"`` -> GPUs 1 and 3."""
    if "," not in text:
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"not a number of GPUs: {text!r}")
        return [str(i) for i in range(int(text))]
    ids = [part.strip() for part in text.split(",")]
    if not all(re.fullmatch(r"\d+", i) for i in ids) or len(set(ids)) != len(ids):
        raise ValueError(f"not distinct GPU indices: {text!r}")
    return ids


def _worker(gpu: str, base: str | None) -> list[str]:
    """A worker service's lines, pinned to ``gpu``; it extends the base file's worker, unless
    ``base`` is None (it is that worker)."""
    lines = [f"  {'worker' if base is None else f'worker-gpu{gpu}'}:"]
    if base is not None:
        lines.append(f"    extends: {{file: {base}, service: worker}}")
    return [
        *lines,
        "    environment:",
        "      WORKER_DEVICE: cuda",
        "    deploy:",
        "      resources:",
        "        reservations:",
        "          devices: !override",
        f'            - {{driver: nvidia, device_ids: ["{gpu}"], capabilities: [gpu]}}',
    ]


def render(ids: Sequence[str], base: str) -> str:
    first, *others = ids
    lines = [
        f"# One worker per GPU ({', '.join(ids)}), written by docker/gpu_workers.py: write it",
        "# again rather than edit it. Give it after the base file to every docker compose command:",
        f"#   docker compose -f {base} -f THIS_FILE up -d --build",
        "# A container sees its GPU alone, as device 0; WORKER_DEVICE=cuda fails rather than run",
        "# on the CPU when it sees none.",
        "services:",
        *_worker(first, None),
    ]
    for gpu in others:
        lines += _worker(gpu, base)
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--gpus", required=True, help="a count (4) or GPU indices (0,2,3)")
    parser.add_argument(
        "--base",
        default="docker-compose.yml",
        help="the compose file whose worker service to extend, relative to the output file",
    )
    args = parser.parse_args(argv)
    try:
        ids = gpu_ids(args.gpus)
    except ValueError as exc:
        parser.error(str(exc))
    sys.stdout.write(render(ids, args.base))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
