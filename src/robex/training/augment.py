"""Batched data augmentation on tensors (no per-image Python loop)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robex.utils.errors import RobexError


class Augment:
    """Random crop with zero padding and random horizontal flip (the usual CIFAR recipe)."""

    def __init__(self, padding: int = 4, flip: bool = True, seed: int = 0) -> None:
        if padding < 0:
            raise RobexError(f"data.augment.padding={padding} must be >= 0")
        self.padding, self.flip = padding, flip
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n, _, height, width = images.shape
        if self.padding:
            padded = F.pad(images, [self.padding] * 4)
            dy = torch.randint(0, 2 * self.padding + 1, (n,), generator=self.generator).to(images.device)
            dx = torch.randint(0, 2 * self.padding + 1, (n,), generator=self.generator).to(images.device)
            rows = (dy[:, None] + torch.arange(height, device=images.device))[:, None, :, None]
            cols = (dx[:, None] + torch.arange(width, device=images.device))[:, None, None, :]
            batch = torch.arange(n, device=images.device)[:, None, None, None]
            channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
            images = padded[batch, channel, rows, cols]
        if self.flip:
            flip = (torch.rand(n, generator=self.generator) < 0.5).to(images.device)
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        return images
