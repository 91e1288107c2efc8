from __future__ import annotations

import pytest
import torch

from incompat.networks import build_model


@pytest.mark.parametrize("arch", ["small_cnn", "resnet20", "resnet32", "preact_resnet18"])
@pytest.mark.parametrize(("channels", "size", "classes"), [(1, 8, 2), (3, 32, 10), (1, 28, 43)])
def test_architectures_adapt_to_channels_size_and_classes(arch, channels, size, classes) -> None:
    model = build_model(arch, channels, classes).eval()
    with torch.no_grad():
        out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, classes)


def test_unknown_architecture() -> None:
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("vgg", 3, 10)  # type: ignore[arg-type]
