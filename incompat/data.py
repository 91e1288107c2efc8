"""The dataset as one tensor on the device, with augmentation done on whole batches.

Images stay uint8 on the device (a quarter of float32's memory) and are normalised per batch.
Subsets are boolean masks over the N samples; batches are index tensors into the dataset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from incompat.config import Normalization

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def default_crop_padding(height: int, width: int) -> int:
    """4 px for 32 px images (the reference), 2 px for 16-28 px, 1 px below."""
    side = min(height, width)
    return 4 if side >= 32 else 2 if side >= 16 else 1


@dataclass
class DeviceData:
    images: torch.Tensor  # uint8, N x C x H x W, on the device
    labels: torch.Tensor  # int64, N, on the device
    num_classes: int
    mean: torch.Tensor  # float32, 1 x C x 1 x 1
    std: torch.Tensor
    crop_padding: int
    hflip: bool
    channels_last: bool

    @classmethod
    def from_arrays(
        cls,
        images: np.ndarray,
        labels: np.ndarray,
        num_classes: int,
        device: torch.device,
        *,
        normalization: Normalization,
        crop_padding: int | None,
        hflip: bool,
    ) -> DeviceData:
        """``images`` is uint8 N x H x W x C (already validated); ``labels`` int N."""
        x = _to_nchw(images, device)
        channels = x.shape[1]
        if normalization == "imagenet":
            mean_values: tuple[float, ...] = _IMAGENET_MEAN
            std_values: tuple[float, ...] = _IMAGENET_STD
            if channels != 3:
                # grayscale: the luminance-weighted ImageNet values
                mean_values, std_values = (0.449,) * channels, (0.226,) * channels
            mean = torch.tensor(mean_values, device=device)
            std = torch.tensor(std_values, device=device)
        else:
            mean, std = _channel_moments(x)
        height, width = x.shape[2], x.shape[3]
        return cls(
            images=x,
            labels=torch.from_numpy(labels.astype(np.int64)).to(device),
            num_classes=num_classes,
            mean=mean.view(1, -1, 1, 1).float(),
            std=std.view(1, -1, 1, 1).float().clamp_min(1e-3),
            crop_padding=default_crop_padding(height, width)
            if crop_padding is None
            else crop_padding,
            hflip=hflip,
            channels_last=True,  # faster on CUDA and on oneDNN CPU kernels alike
        )

    def with_images(self, images: np.ndarray, labels: np.ndarray) -> DeviceData:
        """Other images (N x H x W x C uint8) with this dataset's normalisation and augmentation."""
        y = torch.from_numpy(labels.astype(np.int64)).to(self.device)
        return dataclasses.replace(self, images=_to_nchw(images, self.device), labels=y)

    @property
    def n(self) -> int:
        return int(self.images.shape[0])

    @property
    def device(self) -> torch.device:
        return self.images.device

    def batch(
        self, index: torch.Tensor, *, augment: bool, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Normalised float images for ``index``, randomly cropped and flipped when ``augment``."""
        x = self.images[index]
        if augment:
            assert generator is not None
            x = self._augment(x, generator)
        x = (x.float() / 255.0 - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        pad = self.crop_padding
        if pad > 0:
            # Zero padding of the raw image, as torchvision's RandomCrop(padding=p) on a PIL image.
            padded = F.pad(x, (pad, pad, pad, pad))
            shifts = torch.randint(0, 2 * pad + 1, (2, b), device=x.device, generator=generator)
            rows = shifts[0, :, None] + torch.arange(h, device=x.device)  # b x h
            cols = shifts[1, :, None] + torch.arange(w, device=x.device)  # b x w
            batch = torch.arange(b, device=x.device)[:, None, None]
            # Advanced indexing gives b x h x w x c; move channels back.
            x = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
            x = x.permute(0, 3, 1, 2)
        if self.hflip:
            flip = torch.rand(b, device=x.device, generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x


def _to_nchw(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """N x H x W x C uint8 to an N x C x H x W tensor on ``device``; always a copy, so later changes
    to the caller's array cannot reach the run."""
    return torch.from_numpy(np.array(images.transpose(0, 3, 1, 2), order="C")).to(device)


def _channel_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images, in chunks: a large dataset needs no float copy."""
    channels = x.shape[1]
    total = torch.zeros(channels, dtype=torch.float64, device=x.device)
    total_sq = torch.zeros_like(total)
    for chunk in x.split(4096):
        values = chunk.to(torch.float64).div_(255.0).transpose(0, 1).reshape(channels, -1)
        total += values.sum(1)
        total_sq += values.square().sum(1)
    count = x.numel() // channels
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    return mean.float(), std.float()


def shuffled_batches(
    index: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Shuffled batches of ``index``; a final batch of one is dropped (BatchNorm needs two)."""
    order = index[torch.randperm(index.numel(), device=index.device, generator=generator)]
    for start in range(0, order.numel(), batch_size):
        batch = order[start : start + batch_size]
        if batch.numel() >= 2:
            yield batch
