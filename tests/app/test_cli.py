"""``dataset-audit`` as a user runs it: a real process, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from incompat.research.datasets import balanced_subset


def _cli(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *map(str, args)],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def dataset_file(tmp_path_factory, fashion_mnist) -> Path:
    images, labels = fashion_mnist
    index = balanced_subset(labels, 400, seed=0)
    path = tmp_path_factory.mktemp("data") / "data.npz"
    np.savez(path, x=images[index], y=labels[index])
    return path


def test_scan_writes_the_result_json(dataset_file, tmp_path) -> None:
    out, report = tmp_path / "result.json", tmp_path / "report.html"
    done = _cli(
        "scan", dataset_file, "--preset", "tiny", "--seed", "3", "--output", out, "--report", report
    )
    assert done.returncode == 0, done.stderr
    assert "Audited 400 samples" in done.stdout
    assert "Verdict: " in done.stdout
    assert "clustering" in done.stderr, "progress is shown"
    result = json.loads(out.read_text())
    assert result["n_samples"] == 400
    assert result["preset"] == "tiny"
    assert result["seed"] == 3
    assert len(result["scores"]) == 400
    assert result["flagged"] == sorted(result["flagged"])
    assert all(result["scores"][i] >= 0.5 for i in result["flagged"])
    assert result["seconds"] > 0
    assert result["summary"]["n_flagged"] == len(result["flagged"])
    assert result["summary"]["verdict"]["status"] in ("poisoned", "clean")
    # The standalone report carries its pictures inline.
    html = report.read_text()
    assert 'id="classes"' in html
    assert 'id="histogram"' in html
    assert html.count('<img class="thumb" src="data:image/png;base64,') >= min(
        len(result["flagged"]), 1
    )


def _write(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def test_bad_files_exit_2_with_a_clear_message(tmp_path) -> None:
    images = np.zeros((300, 10, 10), np.uint8)
    labels = np.arange(300) % 2
    cases = {
        "missing": (tmp_path / "absent.npz", "no such file"),
        "not npz": (tmp_path / "junk.npz", "not a readable zip archive"),
        "no y": (_write(tmp_path / "noy.npz", x=images), "missing ['y']"),
        "float x": (_write(tmp_path / "f.npz", x=images.astype(float), y=labels), "uint8"),
        "lengths": (
            _write(tmp_path / "len.npz", x=images, y=labels[:5]),
            "300 images but 'y' has 5",
        ),
        "one class": (_write(tmp_path / "one.npz", x=images, y=labels * 0), "at least 2 classes"),
        "pickle": (
            _write(tmp_path / "obj.npz", x=np.array([object()] * 3, dtype=object), y=labels[:3]),
            "object arrays are refused",
        ),
    }
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    for name, (path, message) in cases.items():
        done = _cli("scan", path, "--preset", "tiny")
        assert done.returncode == 2, (name, done.stdout, done.stderr)
        assert message in done.stderr, (name, done.stderr)
        assert "Traceback" not in done.stderr, name


@pytest.mark.parametrize("module", ["app.cli", "app.main", "dataset_audit.client", "app.serve"])
def test_the_api_side_does_not_import_torch(module: str) -> None:
    """The API process stays small and starts fast: torch and the engine are the worker's. Of
    the engine it reads only the torch-free configuration (presets, the flag threshold) and cost
    model (estimates)."""
    code = (
        f"import sys, {module}; "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('incompat')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() in (
        "[]",
        "['incompat', 'incompat.config', 'incompat.errors', 'incompat.version']",
        "['incompat', 'incompat.config', 'incompat.cost', 'incompat.errors', 'incompat.version']",
    )


def test_the_api_knows_every_engine_preset() -> None:
    from incompat import PRESETS
    from incompat.config import PRESET_NAMES

    assert set(PRESET_NAMES) == set(PRESETS)


@pytest.mark.parametrize("verb", ["status", "flagged", "report"])
def test_a_malformed_audit_id_gets_one_line(verb: str) -> None:
    done = _cli(verb, "abc123", "--server", "http://127.0.0.1:9")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert "'abc123' is not an audit id" in done.stderr
