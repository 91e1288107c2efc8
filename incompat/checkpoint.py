"""Checkpoints of the clustering stage, taken after every weak learner.

Every stage draws its randomness from a seed derived from (run seed, bag, cluster), so a checkpoint
needs no random-generator state: the finished learners' clusters and predictions, the unclustered
samples of the current bag, and where the run stands. Saved as a plain npz (no pickle), written
atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

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


def save(path: str | os.PathLike[str], state: ClusteringState, run_id: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(
            f,
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
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def learners_in(path: str | os.PathLike[str]) -> int:
    """How many weak learners the checkpoint at ``path`` holds; ``ValueError`` if unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
        return len(meta["learner_bags"])
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc


def load(path: str | os.PathLike[str], run_id: str) -> ClusteringState:
    """The state saved at ``path``; ``ValueError`` if it belongs to another run or is unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            active, cores = data["active"], data["cores"]
            predictions, given_probs = data["predictions"], data["given_probs"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"checkpoint {path} has an unsupported format {meta.get('format')!r}")
    if meta["run"] != run_id:
        raise ValueError(
            f"checkpoint {path} belongs to another run (different data, config or seed)"
        )
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
