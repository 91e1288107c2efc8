"""Checkpoints of the clustering stage, taken after every weak learner, and the probe's features.

Every stage draws its randomness from a seed derived from (run seed, bag, cluster), so a checkpoint
needs no random-generator state: the finished learners' clusters and predictions, the unclustered
samples of the current bag, and where the run stands. A plain npz (no pickle), kept in a ``Store``:
a local file written atomically, or an object in the service's storage, where a worker on another
host finds it. A finished bag's checkpoint is that bag's result (``engine.Run``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from incompat.config import EngineConfig

FORMAT_VERSION = 1


@dataclass
class ClusteringState:
    n_samples: int
    bags: int
    bag: int = 0  # the bag in progress (== bags once clustering is done)
    cluster: int = 0  # clusters finished in that bag
    active: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # unclustered, this bag
    cores: list[np.ndarray] = field(default_factory=list)  # bool N, one per learner
    predictions: list[np.ndarray] = field(default_factory=list)  # int N, one per learner
    given_probs: list[np.ndarray] = field(default_factory=list)  # float32 N, one per learner
    learner_bags: list[int] = field(default_factory=list)  # the bag of each learner
    samples_trained: int = 0
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.active.size == 0:
            self.active = np.ones(self.n_samples, bool)

    @property
    def n_learners(self) -> int:
        return len(self.cores)

    def cluster_ids(self) -> np.ndarray:
        """bags x N: each sample's cluster number within each bag, -1 where it joined none."""
        ids = np.full((self.bags, self.n_samples), -1, np.int16)
        position_in_bag: dict[int, int] = {}
        for core, bag in zip(self.cores, self.learner_bags, strict=True):
            k = position_in_bag.get(bag, 0)
            ids[bag, core] = k
            position_in_bag[bag] = k + 1
        return ids


def fingerprint(images: np.ndarray, labels: np.ndarray, config: EngineConfig, seed: int) -> str:
    """Identifies a run: a checkpoint resumes only the run that wrote it."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(images).data)
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).data)
    digest.update(json.dumps(config.to_dict(), sort_keys=True).encode())
    digest.update(str(seed).encode())
    return digest.hexdigest()


class Store(Protocol):
    """Where one checkpoint lives. ``write`` replaces it whole, or leaves the old one."""

    def read(self) -> bytes | None:
        """The stored bytes, or None when there are none yet."""

    def write(self, data: bytes) -> None: ...


@dataclass(frozen=True)
class FileStore:
    path: Path

    def read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def as_store(where: str | os.PathLike[str] | Store) -> Store:
    return FileStore(Path(where)) if isinstance(where, (str, os.PathLike)) else where


def save(store: Store, state: ClusteringState, run_id: str) -> None:
    store.write(to_bytes(state, run_id))


def to_bytes(state: ClusteringState, run_id: str) -> bytes:
    meta = {
        "format": FORMAT_VERSION,
        "run": run_id,
        "n_samples": state.n_samples,
        "bags": state.bags,
        "bag": state.bag,
        "cluster": state.cluster,
        "samples_trained": state.samples_trained,
        "seconds": state.seconds,
        "learner_bags": state.learner_bags,
    }
    n = state.n_samples
    buffer = io.BytesIO()
    np.savez(
        buffer,
        meta=np.array(json.dumps(meta)),
        active=state.active,
        cores=np.stack(state.cores) if state.cores else np.zeros((0, n), bool),
        predictions=(
            np.stack(state.predictions) if state.predictions else np.zeros((0, n), np.int64)
        ),
        given_probs=(
            np.stack(state.given_probs) if state.given_probs else np.zeros((0, n), np.float32)
        ),
    )
    return buffer.getvalue()


def learners_in(data: bytes, where: str = "checkpoint") -> int:
    """How many weak learners a checkpoint holds; ``ValueError`` if unreadable."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            meta = json.loads(str(arrays["meta"]))
        return len(meta["learner_bags"])
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"cannot read {where}: {exc}") from exc


def load(store: Store, run_id: str, where: str = "checkpoint") -> ClusteringState | None:
    """The state in ``store`` (None when empty); ``ValueError`` if it belongs to another run or is
    unreadable."""
    data = store.read()
    return None if data is None else from_bytes(data, run_id, where)


def from_bytes(data: bytes, run_id: str, where: str = "checkpoint") -> ClusteringState:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            meta = json.loads(str(arrays["meta"]))
            active, cores = arrays["active"], arrays["cores"]
            predictions, given_probs = arrays["predictions"], arrays["given_probs"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"cannot read {where}: {exc}") from exc
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"{where} has an unsupported format {meta.get('format')!r}")
    if meta["run"] != run_id:
        raise ValueError(f"{where} belongs to another run (different data, config or seed)")
    return ClusteringState(
        n_samples=meta["n_samples"],
        bags=meta["bags"],
        bag=meta["bag"],
        cluster=meta["cluster"],
        active=active.astype(bool),
        cores=list(cores.astype(bool)),
        predictions=list(predictions.astype(np.int64)),
        given_probs=list(given_probs.astype(np.float32)),
        samples_trained=meta["samples_trained"],
        learner_bags=list(meta["learner_bags"]),
        seconds=meta["seconds"],
    )


def combine(bags: list[ClusteringState]) -> ClusteringState:
    """One state of the finished bags, in order: what a serial run holds after clustering."""
    first = bags[0]
    return ClusteringState(
        n_samples=first.n_samples,
        bags=first.bags,
        bag=first.bags,
        cores=[core for bag in bags for core in bag.cores],
        predictions=[p for bag in bags for p in bag.predictions],
        given_probs=[p for bag in bags for p in bag.given_probs],
        learner_bags=[b for bag in bags for b in bag.learner_bags],
        samples_trained=sum(bag.samples_trained for bag in bags),
        seconds=sum(bag.seconds for bag in bags),
    )


@dataclass(frozen=True)
class ProbeFeatures:
    """The trigger-group probe's penultimate features (N x D), computed apart from the rest."""

    features: np.ndarray
    samples_trained: int
    seconds: float


def probe_to_bytes(probe: ProbeFeatures, run_id: str) -> bytes:
    meta = {"format": FORMAT_VERSION, "run": run_id, "samples_trained": probe.samples_trained,
            "seconds": probe.seconds}  # fmt: skip
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array(json.dumps(meta)), features=probe.features)
    return buffer.getvalue()


def probe_from_bytes(data: bytes, run_id: str, where: str = "probe features") -> ProbeFeatures:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            meta = json.loads(str(arrays["meta"]))
            features = arrays["features"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"cannot read {where}: {exc}") from exc
    if meta.get("format") != FORMAT_VERSION or meta.get("run") != run_id:
        raise ValueError(f"{where} belong to another run or format")
    return ProbeFeatures(features.astype(np.float32), meta["samples_trained"], meta["seconds"])
