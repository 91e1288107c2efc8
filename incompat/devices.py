"""The device an engine run computes on, and what makes its results repeatable there."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from incompat.errors import DeviceUnavailableError, InvalidConfigError


@contextmanager
def repeatable_cudnn() -> Iterator[None]:
    """cuDNN's deterministic algorithms, chosen without autotuning, for the duration.

    Autotuning times the candidate algorithms and keeps the fastest, so two processes can pick
    different ones and compute different results from the same seed (on an H100 they flagged 124
    and 162 samples of one dataset). A redelivered audit resumes in another process, and must
    give the result the uninterrupted run would have given.
    """
    cudnn = torch.backends.cudnn
    saved = cudnn.benchmark, cudnn.deterministic
    cudnn.benchmark, cudnn.deterministic = False, True
    try:
        yield
    finally:
        cudnn.benchmark, cudnn.deterministic = saved


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:  # torch's words for a malformed name, e.g. "gpu"
        raise InvalidConfigError(f"not a device: {device!r} ({exc})") from None
    absent = {
        "cuda": "CUDA" if not torch.cuda.is_available() else None,
        "mps": "MPS" if not torch.backends.mps.is_available() else None,
    }.get(resolved.type)
    if absent is not None:
        raise DeviceUnavailableError(
            f"device {str(device)!r} was asked for but {absent} is not available"
        )
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise DeviceUnavailableError(
            f"device {str(device)!r} was asked for but this machine has "
            f"{torch.cuda.device_count()} CUDA device(s)"
        )
    return resolved


def free_bytes(device: torch.device) -> int | None:
    """Memory free for a run on ``device``: the GPU's free memory, or the machine's available
    memory for the CPU (Linux); None where it cannot be told."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as meminfo:
                for line in meminfo:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None
