"""How the command line and the CI hook name classes and state the verdict."""

from __future__ import annotations

from collections.abc import Sequence

from dataset_audit.schemas import ImplicatedGroup, Verdict

EVIDENCE = {
    "shared_pixels": "share pixel values that the classes they look like rarely have",
    "trigger_group": "form a cluster of their class that the learners reject far more often "
    "than the rest of it",
}


def class_name(label: int, names: Sequence[str | None] | None) -> str:
    """``class 3 (dress)``, or ``class 3`` without names."""
    name = names[label] if names is not None and 0 <= label < len(names) else None
    return f"class {label} ({name})" if name else f"class {label}"


def short_name(label: int, names: Sequence[str | None] | None) -> str:
    """``dress``, or ``class 3`` without names."""
    name = names[label] if names is not None and 0 <= label < len(names) else None
    return name or f"class {label}"


def verdict_lines(verdict: Verdict | None, names: Sequence[str | None] | None) -> list[str]:
    """The verdict and its evidence, a line each."""
    if verdict is None:
        return ["Verdict: none (this audit was made before the engine gave one)."]
    if verdict.status == "clean":
        return [
            f"Verdict: CLEAN. No group of flagged samples shares a trigger (smallest adjusted "
            f"p-value {verdict.p_value:.2g} over {verdict.n_tests} tests; alpha {verdict.alpha:g})."
            " The flagged samples are label issues: mislabelled or ambiguous."
        ]
    lines = [
        f"Verdict: POISONED. {len(verdict.implicated)} implicated "
        f"{'group' if len(verdict.implicated) == 1 else 'groups'}:"
    ]
    lines += [f"  {group_line(group, names)}" for group in verdict.implicated]
    return lines


def group_line(group: ImplicatedGroup, names: Sequence[str | None] | None) -> str:
    sources = ", ".join(short_name(s, names) for s in group.sources) or "another class"
    return (
        f"{sources} -> {short_name(group.target, names)}: {group.n_samples} suspected "
        f"{'poison' if group.n_samples == 1 else 'poisons'} labelled "
        f"{short_name(group.target, names)} that look like {sources} and "
        f"{EVIDENCE[group.evidence]} ({group.shared:.0%} vs {group.elsewhere:.0%}; "
        f"p = {group.p_value:.2g})"
    )
