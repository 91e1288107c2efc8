"""The engine's mechanics on 600 real images with a minimal schedule (seconds per run)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from incompat import DetectionResult, __version__, checkpoint, detect, get_preset
from incompat.engine import Run

# Two bags of two clusters, one epoch per stage: every code path, in a couple of seconds.
MINIMAL = get_preset("tiny").replace(
    bags=2, clusters_per_bag=2, cluster_frac=0.3, warmup_epochs=1, refit_epochs=1,
    retrain_epochs=1, refine_rounds=2, refine_epochs=1, probe_steps=10,
)  # fmt: skip


class Cancelled(Exception):
    pass


def _same(a: DetectionResult, b: DetectionResult) -> None:
    np.testing.assert_array_equal(a.is_flagged, b.is_flagged)
    np.testing.assert_array_equal(a.score, b.score)
    np.testing.assert_array_equal(a.vote_score, b.vote_score)
    np.testing.assert_array_equal(a.label_prob, b.label_prob)
    np.testing.assert_array_equal(a.cluster_ids, b.cluster_ids)
    np.testing.assert_array_equal(a.voted_label, b.voted_label)


def test_result_shape_and_consistency(small_fashion) -> None:
    images, labels = small_fashion
    result = detect(images, labels, config=MINIMAL, seed=0, device="cpu")
    n = labels.size
    assert result.is_flagged.shape == (n,)
    assert result.is_flagged.dtype == bool
    assert result.score.shape == (n,)
    assert np.all((result.score >= 0) & (result.score <= 1))
    assert result.label_prob.shape == (n,)
    assert np.all((result.label_prob >= 0) & (result.label_prob <= 1))
    np.testing.assert_array_equal(result.is_flagged, result.score >= 0.5)
    np.testing.assert_array_equal(result.flagged_indices, np.flatnonzero(result.is_flagged))
    assert result.cluster_ids.shape == (MINIMAL.bags, n)
    assert result.n_learners == int((result.cluster_ids.max(axis=1) + 1).sum())
    assert set(np.unique(result.voted_label)) <= set(np.unique(labels)) | {-1}
    assert sum(c.n_samples for c in result.class_summary) == n
    assert sum(c.n_flagged for c in result.class_summary) == result.is_flagged.sum()
    assert {"clustering", "voting", "refinement", "total"} <= set(result.timings)
    assert result.engine_version == __version__
    assert result.seed == 0
    assert result.epoch_equivalents > 0
    json.dumps(result.summary())  # JSON-ready
    order = result.most_suspicious()
    assert sorted(order.tolist()) == list(range(n))
    assert np.all(np.diff(result.score[order]) <= 0)
    assert set(result.most_suspicious(int(result.is_flagged.sum()))) == set(result.flagged_indices)


def test_same_seed_same_result_other_seed_other_clusters(small_fashion) -> None:
    images, labels = small_fashion
    first = detect(images, labels, config=MINIMAL, seed=7, device="cpu")
    _same(first, detect(images, labels, config=MINIMAL, seed=7, device="cpu"))
    other = detect(images, labels, config=MINIMAL, seed=8, device="cpu")
    assert not np.array_equal(first.cluster_ids, other.cluster_ids)


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(small_fashion, tmp_path) -> None:
    images, labels = small_fashion
    path = tmp_path / "audit.ckpt.npz"
    learners_done: list[int] = []

    def stop_after_three(stage: str, done: int, total: int) -> None:
        if stage == "clustering":
            learners_done.append(done)
            if done == 3:
                raise Cancelled

    with pytest.raises(Cancelled):
        detect(images, labels, config=MINIMAL, seed=3, device="cpu",
               on_progress=stop_after_three, checkpoint_to=path)  # fmt: skip
    assert path.exists()
    assert learners_done[-1] == 3
    resumed_progress: list[tuple[str, int, int]] = []
    resumed = detect(
        images, labels, config=MINIMAL, seed=3, device="cpu", checkpoint_to=path,
        resume_from=path, on_progress=lambda *p: resumed_progress.append(p),
    )  # fmt: skip
    assert resumed_progress[0] == ("clustering", 3, 4), "picks up after the third learner"
    _same(resumed, detect(images, labels, config=MINIMAL, seed=3, device="cpu"))


def test_bags_and_probe_apart_equal_a_serial_run(small_fashion) -> None:
    """The service's parallel path: each bag and the probe in a process of its own (a fresh
    ``Run`` each), results passed as bytes, the finish in yet another."""
    images, labels = small_fashion
    serial = detect(images, labels, config=MINIMAL, seed=5, device="cpu")

    def fresh() -> Run:
        return Run(images, labels, config=MINIMAL, seed=5, device="cpu")

    run_id = fresh().run_id
    bags = [checkpoint.to_bytes(fresh().cluster_bag(bag), run_id) for bag in reversed(range(2))][
        ::-1
    ]
    probe = checkpoint.probe_to_bytes(fresh().probe(), run_id)
    merged = fresh().finish(
        checkpoint.combine([checkpoint.from_bytes(b, run_id) for b in bags]),
        checkpoint.probe_from_bytes(probe, run_id),
    )
    _same(serial, merged)
    assert merged.verdict == serial.verdict
    assert merged.epoch_equivalents == pytest.approx(serial.epoch_equivalents)


def test_a_bag_resumes_from_its_store(small_fashion) -> None:
    images, labels = small_fashion
    run = Run(images, labels, config=MINIMAL, seed=2, device="cpu")
    store = _MemoryStore()

    def stop_after_one(stage: str, done: int, total: int) -> None:
        assert total == MINIMAL.clusters_per_bag
        if done == 1:
            raise Cancelled

    with pytest.raises(Cancelled):
        run.cluster_bag(1, on_progress=stop_after_one, store=store)
    assert checkpoint.learners_in(store.data or b"") == 1
    resumed = Run(images, labels, config=MINIMAL, seed=2, device="cpu").cluster_bag(1, store=store)
    whole = Run(images, labels, config=MINIMAL, seed=2, device="cpu").cluster_bag(1)
    assert resumed.learner_bags == whole.learner_bags == [1, 1]
    for a, b in zip(resumed.predictions, whole.predictions, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="another run"):
        Run(images, labels, config=MINIMAL, seed=3, device="cpu").cluster_bag(1, store=store)


class _MemoryStore:
    def __init__(self) -> None:
        self.data: bytes | None = None

    def read(self) -> bytes | None:
        return self.data

    def write(self, data: bytes) -> None:
        self.data = data


def test_checkpoint_of_another_run_is_refused(small_fashion, tmp_path) -> None:
    images, labels = small_fashion
    path = tmp_path / "audit.ckpt.npz"
    detect(images, labels, config=MINIMAL, seed=1, device="cpu", checkpoint_to=path)
    with pytest.raises(ValueError, match="another run"):
        detect(images, labels, config=MINIMAL, seed=2, device="cpu", resume_from=path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        detect(images, labels, config=MINIMAL, seed=1, device="cpu", resume_from=path)


def test_progress_reports_every_learner_and_round(small_fashion) -> None:
    images, labels = small_fashion
    calls: list[tuple[str, int, int]] = []
    result = detect(images, labels, config=MINIMAL, seed=0, device="cpu",
                    on_progress=lambda *p: calls.append(p))  # fmt: skip
    clustering = [done for stage, done, _ in calls if stage == "clustering"]
    assert clustering == list(range(result.n_learners + 1))
    assert [d for s, d, _ in calls if s == "refinement"] == list(range(MINIMAL.refine_rounds + 1))
    assert ("voting", 1, 1) in calls
    assert all(done <= total for _, done, total in calls)


def test_runs_on_deterministic_cudnn_and_gives_the_caller_its_settings_back(
    small_fashion, monkeypatch
) -> None:
    """Autotuned cuDNN algorithms differ between processes; a resumed audit runs in another one."""
    images, labels = small_fashion
    cudnn = torch.backends.cudnn
    monkeypatch.setattr(cudnn, "benchmark", True)
    monkeypatch.setattr(cudnn, "deterministic", False)
    during: set[tuple[bool, bool]] = set()
    detect(images, labels, config=MINIMAL, seed=0, device="cpu",
           on_progress=lambda *_: during.add((cudnn.benchmark, cudnn.deterministic)))  # fmt: skip
    assert during == {(False, True)}
    assert (cudnn.benchmark, cudnn.deterministic) == (True, False)
    with pytest.raises(Cancelled):
        detect(images, labels, config=MINIMAL, seed=0, device="cpu", on_progress=cancel_at_once)
    assert (cudnn.benchmark, cudnn.deterministic) == (True, False)


def cancel_at_once(stage: str, done: int, total: int) -> None:
    raise Cancelled


def test_cancel_by_raising_from_the_callback(small_fashion) -> None:
    images, labels = small_fashion

    def cancel(stage: str, done: int, total: int) -> None:
        if stage == "refinement":
            raise Cancelled

    with pytest.raises(Cancelled):
        detect(images, labels, config=MINIMAL, seed=0, device="cpu", on_progress=cancel)


def test_rgb_images_odd_sizes_and_arbitrary_labels() -> None:
    rng = np.random.default_rng(0)
    labels = np.array([10, 20, 30])[np.arange(300) % 3]
    images = rng.integers(0, 60, (300, 9, 11, 3), dtype=np.uint8)
    images[labels == 20, :, :, 0] += 150  # classes a network can tell apart
    images[labels == 30, :, :, 2] += 150
    result = detect(images, labels, config=MINIMAL, seed=0, device="cpu")
    assert result.n_samples == 300
    assert {c.label for c in result.class_summary} == {10, 20, 30}
    assert set(np.unique(result.voted_label)) <= {10, 20, 30, -1}
    assert result.is_flagged.mean() < 0.2


@pytest.mark.parametrize("preset", ["tiny", "fast", "paper"])
def test_presets_are_complete_and_valid(preset: str) -> None:
    config = get_preset(preset)
    assert config.replace() == config
    assert type(config).from_dict(config.to_dict()) == config
