"""The report's pictures, made while the images are in memory: thumbnails of the samples it
shows, written to storage beside the upload."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.report_samples import pick_examples, score_histogram
from app.storage import Storage
from app.thumbnails import thumbnail_png


def report_assets(
    storage: Storage,
    audit_id: str,
    images: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    is_flagged: np.ndarray,
    voted_label: np.ndarray,
    suspicion_order: np.ndarray,
) -> dict[str, Any]:
    """Write the thumbnails; the summary entries that name them, and the histogram."""
    examples = pick_examples(labels, scores, is_flagged, voted_label, suspicion_order)
    for sample in examples["suspicious"] + examples["clean"]:
        index = sample["index"]
        storage.put_bytes(thumbnail_png(images[index]), f"audits/{audit_id}/thumbs/{index}.png")
    return {"examples": examples, "score_histogram": score_histogram(scores)}
