"""Settings refuse what cannot work, and the API's schema follows the engine's configuration,
the one source of the presets, the default preset and the flag threshold."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.main import create_app
from app.settings import Settings
from incompat.config import DEFAULT_PRESET, FLAG_THRESHOLD, PRESET_NAMES, PRESETS


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"WORKER_DEVICE": "gpu"}, "worker_device"),
        ({"DEFAULT_PRESET": "huge"}, "default_preset"),
        ({"MAX_ATTEMPTS": "0"}, "max_attempts"),
        ({"PROGRESS_INTERVAL_S": "-1"}, "progress_interval_s"),
        ({"HEARTBEAT_TIMEOUT_S": "20"}, "must be at least twice HEARTBEAT_INTERVAL_S"),
        ({"AUDIT_TIME_LIMIT_S": "1e9"}, "must outlast AUDIT_TIME_LIMIT_S"),
        ({"LOG_FORMAT": "xml"}, "log_format"),
    ],
)
def test_settings_that_cannot_work_are_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], words: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=words):
        Settings(data_dir=tmp_path)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_every_device_spelling_the_engine_takes_is_accepted(tmp_path: Path, device: str) -> None:
    assert Settings(data_dir=tmp_path, worker_device=device).worker_device == device


def test_the_api_schema_follows_the_engine_configuration(tmp_path: Path) -> None:
    assert tuple(PRESETS) == PRESET_NAMES
    assert Settings(data_dir=tmp_path).default_preset == DEFAULT_PRESET
    with TestClient(create_app(Settings(data_dir=tmp_path))) as client:
        schema = client.get("/openapi.json").json()
    form = schema["paths"]["/audits"]["post"]["requestBody"]["content"]["multipart/form-data"]
    properties = form["schema"]["properties"]
    assert properties["preset"]["enum"] == list(PRESET_NAMES)
    assert form["schema"]["required"] == ["file"]
    assert set(properties) == {
        "file",
        "preset",
        "seed",
        "image_size",
        "name",
        "callback_url",
        "reuse",
    }
    assert (properties["seed"]["minimum"], properties["seed"]["maximum"]) == (0, 2**63 - 1)
    size = properties["image_size"]
    assert (size["type"], size["minimum"], size["maximum"]) == ("integer", 8, 512)
    scores = schema["components"]["schemas"]["Scores"]["properties"]
    assert scores["threshold"]["default"] == FLAG_THRESHOLD
