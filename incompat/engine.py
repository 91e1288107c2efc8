"""``detect``: ISPL+B end to end, arrays in, ``DetectionResult`` out; ``Run``: its stages apart,
for bags computed on several workers."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import torch

from incompat import checkpoint, cost
from incompat.checkpoint import ClusteringState
from incompat.clustering import find_cluster, train_weak_learner
from incompat.config import DEFAULT_PRESET, FLAG_THRESHOLD, EngineConfig, get_preset
from incompat.data import DeviceData
from incompat.devices import free_bytes, repeatable_cudnn, resolve_device
from incompat.errors import InvalidConfigError, InvalidDatasetError
from incompat.groups import TriggerGroup, find_groups, probe_features
from incompat.result import DetectionResult, GroupSummary, summarize_classes
from incompat.scores import raised, untied
from incompat.training import Learner
from incompat.validation import validate
from incompat.verdict import find_suspects, verdict_of
from incompat.version import __version__
from incompat.voting import refine, refinement_start, vote

ProgressCallback = Callable[[str, int, int], None]
"""``on_progress(stage, done, total)``; stages are "clustering", "voting", "refinement" and
"groups".
The callback may raise to cancel the run."""


@repeatable_cudnn()
def detect(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    config: EngineConfig | str = DEFAULT_PRESET,
    seed: int = 0,
    device: str | torch.device | None = None,
    on_progress: ProgressCallback | None = None,
    checkpoint_to: str | os.PathLike[str] | checkpoint.Store | None = None,
    resume_from: str | os.PathLike[str] | checkpoint.Store | None = None,
) -> DetectionResult:
    """Flag the samples whose given labels the incompatible clusters' learners reject.

    ``images``: uint8, N x H x W or N x H x W x C (C = 1 or 3). ``labels``: N integers, 2 or more
    distinct values. ``config``: an ``EngineConfig`` or a preset name. With ``checkpoint_to`` the
    state is saved after every weak learner; ``resume_from`` continues such a run (a missing file
    starts afresh, a file of another run is a ``ValueError``) and gives the same result as an
    uninterrupted one on the same kind of device.
    """
    run = Run(images, labels, config=config, seed=seed, device=device)
    report = on_progress or _no_progress
    saved = None if resume_from is None else checkpoint.load(checkpoint.as_store(resume_from),
                                                              run.run_id)  # fmt: skip
    state = saved or ClusteringState(n_samples=run.data.n, bags=run.config.bags)
    store = None if checkpoint_to is None else checkpoint.as_store(checkpoint_to)
    run.cluster(state, report, store, stop_bag=run.config.bags)
    return run.finish(state, None, report)


class Run:
    """One dataset, configuration and seed, prepared on one device. ``detect`` runs its stages
    one after another; the service may instead cluster each bag and compute the probe's features
    on different workers (``cluster_bag``, ``probe``), then ``finish`` on any of them, with the
    result ``detect`` gives: every stage draws from a seed of its own."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        config: EngineConfig | str = DEFAULT_PRESET,
        seed: int = 0,
        device: str | torch.device | None = None,
    ) -> None:
        started = time.perf_counter()
        self.config = get_preset(config) if isinstance(config, str) else config
        self.seed = seed
        self.dataset = validate(images, labels, self.config)
        self.device = resolve_device(device)
        _check_room(self.config, self.dataset.images, self.device)
        self.data = DeviceData.from_arrays(
            self.dataset.images,
            self.dataset.labels,
            self.dataset.num_classes,
            self.device,
            normalization=self.config.normalization,
            crop_padding=self.config.crop_padding,
            hflip=self.config.hflip,
        )
        self.learner = Learner(self.data, self.config)
        self.run_id = checkpoint.fingerprint(
            self.dataset.images, self.dataset.labels, self.config, seed
        )
        self.prepared_s = time.perf_counter() - started

    @repeatable_cudnn()
    def cluster_bag(
        self,
        bag: int,
        *,
        on_progress: ProgressCallback | None = None,
        store: checkpoint.Store | None = None,
    ) -> ClusteringState:
        """Bag ``bag``'s clusters and learners, resumed from ``store`` and saved there after
        every learner: once finished, the stored state is the bag's result."""
        if not 0 <= bag < self.config.bags:
            raise InvalidConfigError(f"bag {bag} is not one of the {self.config.bags} bags")
        where = f"bag {bag}'s checkpoint"
        saved = None if store is None else checkpoint.load(store, self.run_id, where)
        state = saved or ClusteringState(n_samples=self.data.n, bags=self.config.bags, bag=bag)
        self.cluster(state, on_progress or _no_progress, store, stop_bag=bag + 1)
        return state

    def cluster(
        self,
        state: ClusteringState,
        report: ProgressCallback,
        store: checkpoint.Store | None,
        *,
        stop_bag: int,
    ) -> None:
        """Run (or finish) the bags from ``state.bag`` up to ``stop_bag``, updating ``state``
        after each weak learner."""
        config, learner = self.config, self.learner
        device, n = self.device, state.n_samples
        min_active = config.min_active_frac * n
        total = (stop_bag - min(state.learner_bags, default=state.bag)) * config.clusters_per_bag
        report("clustering", state.n_learners, total)
        while state.bag < stop_bag:
            bag_started = time.perf_counter()
            active = torch.from_numpy(state.active).to(device)
            if state.cluster >= config.clusters_per_bag or int(active.sum()) <= min_active:
                state.bag += 1
                state.cluster = 0
                state.active = np.ones(n, bool)
                continue
            cluster_seed = _stage_seed(self.seed, 0, state.bag, state.cluster)
            learner.samples_trained = 0
            core = find_cluster(
                learner, active, n_total=n, first_in_bag=state.cluster == 0, seed=cluster_seed
            )
            evaluation = train_weak_learner(
                learner, core, _stage_seed(self.seed, 1, state.bag, state.cluster)
            )
            state.cores.append(core.cpu().numpy())
            state.predictions.append(evaluation.prediction.cpu().numpy())
            state.given_probs.append(evaluation.given_prob.float().cpu().numpy())
            state.learner_bags.append(state.bag)
            state.active = (active & ~core).cpu().numpy()
            state.cluster += 1
            state.samples_trained += learner.samples_trained
            state.seconds += time.perf_counter() - bag_started
            if store is not None:
                checkpoint.save(store, state, self.run_id)
            report("clustering", state.n_learners, max(total, state.n_learners))

    @repeatable_cudnn()
    def probe(self, on_progress: ProgressCallback | None = None) -> checkpoint.ProbeFeatures:
        """The trigger-group probe's features (``groups.probe_features``)."""
        report = on_progress or _no_progress
        tic = time.perf_counter()
        report("groups", 0, 1)
        self.learner.samples_trained = 0
        features = probe_features(self.learner, self.config.probe_steps, _stage_seed(self.seed, 4))
        report("groups", 1, 1)
        return checkpoint.ProbeFeatures(
            features.float().cpu().numpy(), self.learner.samples_trained,
            time.perf_counter() - tic,
        )  # fmt: skip

    @repeatable_cudnn()
    def finish(
        self,
        state: ClusteringState,
        probe: checkpoint.ProbeFeatures | None,
        on_progress: ProgressCallback | None = None,
    ) -> DetectionResult:
        """Vote, refine, find trigger groups and the verdict, from every bag's learners
        (``state``) and the probe's features (computed here when None)."""
        config, data, dataset = self.config, self.data, self.dataset
        torch_device, seed = self.device, self.seed
        report = on_progress or _no_progress
        finish_started = time.perf_counter()
        samples_trained = state.samples_trained
        timings = {"clustering": state.seconds}

        tic = time.perf_counter()
        report("voting", 0, 1)
        cores = torch.from_numpy(np.stack(state.cores)).to(torch_device)
        predictions = torch.from_numpy(np.stack(state.predictions)).to(torch_device)
        given_probs = torch.from_numpy(np.stack(state.given_probs)).to(torch_device)
        outcome = vote(
            predictions,
            given_probs,
            cores,
            data.labels,
            data.num_classes,
            config,
            torch.Generator(device=torch_device).manual_seed(_stage_seed(seed, 2)),
        )
        report("voting", 1, 1)
        timings["voting"] = time.perf_counter() - tic

        tic = time.perf_counter()
        if config.refine_rounds > 0:
            report("refinement", 0, config.refine_rounds)
            self.learner.samples_trained = 0
            confidence, label_prob = refine(
                self.learner,
                refinement_start(outcome, config),
                _stage_seed(seed, 3),
                on_round=lambda done, total: report("refinement", done, total),
            )
            samples_trained += self.learner.samples_trained
            is_flagged = confidence <= 1.0 - FLAG_THRESHOLD
            score = untied(1.0 - confidence, label_prob, is_flagged)
        else:
            is_flagged = ~outcome.keep
            label_prob = 1.0 - outcome.against
            score = untied(outcome.against, label_prob, is_flagged)
        timings["refinement"] = time.perf_counter() - tic

        tic = time.perf_counter()
        groups: list[TriggerGroup] = []
        in_group = torch.zeros_like(is_flagged)
        # Where a sample's score must start, once it is known to be in a group (0: anywhere).
        floor = torch.zeros_like(score)
        # The probe's seconds where it ran apart, so that the timings add up to the compute.
        elsewhere = probe.seconds if probe is not None and config.probe_steps > 0 else 0.0
        tic -= elsewhere
        if config.probe_steps > 0:
            probe = probe or self.probe(report)
            samples_trained += probe.samples_trained
            groups = find_groups(
                torch.from_numpy(probe.features).to(torch_device),
                data.labels,
                ~outcome.keep,
                data.num_classes,
                max_share=config.group_max_share,
                min_contrast=config.group_min_contrast,
                generator=torch.Generator(device=torch_device).manual_seed(_stage_seed(seed, 5)),
            )
            for group in groups:
                # Flagged from the threshold, like every other flag; stronger groups rank higher.
                is_flagged = is_flagged | group.members
                in_group = in_group | group.members
                floor = torch.where(
                    group.members,
                    floor.clamp_min(FLAG_THRESHOLD + (1.0 - FLAG_THRESHOLD) * group.contrast),
                    floor,
                )
        timings["groups"] = time.perf_counter() - tic

        tic = time.perf_counter()
        suspects, p_value, n_tests = find_suspects(
            data.images,
            data.labels,
            is_flagged,
            outcome.label,
            groups,
            data.num_classes,
            torch.Generator(device=torch_device).manual_seed(_stage_seed(seed, 6)),
        )
        suspected = torch.zeros_like(is_flagged)
        for suspect in suspects:
            suspected |= suspect.members
        # A suspected poison is flagged, and ranks above every label issue (most_suspicious).
        is_flagged = is_flagged | suspected
        floor = torch.where(suspected, floor.clamp_min(FLAG_THRESHOLD), floor)
        score = raised(score, floor)
        timings["verdict"] = time.perf_counter() - tic
        # Compute seconds: where the bags ran on several workers at once, more than the wall time.
        timings["total"] = (
            self.prepared_s + state.seconds + time.perf_counter() - finish_started + elsewhere
        )

        flagged = is_flagged.cpu().numpy()
        voted_index = outcome.label.cpu().numpy()
        voted_label = np.where(voted_index >= 0, dataset.classes[np.maximum(voted_index, 0)], -1)
        given = dataset.classes[dataset.labels]
        return DetectionResult(
            is_flagged=flagged,
            score=score.float().cpu().numpy(),
            vote_score=outcome.against.float().cpu().numpy(),
            label_prob=label_prob.float().cpu().numpy(),
            voted_label=voted_label.astype(np.int64),
            cluster_ids=state.cluster_ids(),
            class_summary=summarize_classes(given, flagged, voted_label, suspected.cpu().numpy()),
            in_trigger_group=in_group.cpu().numpy(),
            is_suspected_poison=suspected.cpu().numpy(),
            verdict=verdict_of(suspects, p_value, n_tests, dataset.classes),
            trigger_groups=[
                GroupSummary(
                    label=int(dataset.classes[g.cls]),
                    n_samples=int(g.members.sum()),
                    share=g.share,
                    rejected=g.rejected,
                    rejected_elsewhere=g.rejected_elsewhere,
                )
                for g in groups
            ],
            timings=timings,
            config=config,
            seed=seed,
            engine_version=__version__,
            n_learners=state.n_learners,
            epoch_equivalents=samples_trained / data.n,
            device=str(torch_device),
        )


def _check_room(config: EngineConfig, images: np.ndarray, device: torch.device) -> None:
    """Refuse, before anything is copied, a dataset that the device has no memory for."""
    need = cost.device_bytes(config, images.shape[0], images.shape[1:])
    free = free_bytes(device)
    if free is not None and need > free:
        raise InvalidDatasetError(
            f"the audit needs about {need / 2**30:.1f} GiB on {device}, which has "
            f"{free / 2**30:.1f} GiB free: audit fewer or smaller images (image_size), or use a "
            "device with more memory"
        )


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


def _stage_seed(seed: int, *path: int) -> int:
    """An independent 63-bit seed for each stage, so a resumed run draws the same numbers."""
    return int(
        np.random.SeedSequence([seed, *path]).generate_state(2, np.uint64)[0] >> np.uint64(1)
    )
