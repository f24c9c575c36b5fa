"""Differentiable augmentation of what D sees (DiffAugment, Zhao et al. 2020) and the adaptive
probability of applying it (ADA, Karras et al. 2020).

A D shown a few hundred faces learns them by heart and stops teaching G. Showing it every image,
real and generated alike, through random colour shifts, translations and cutouts makes that
harder; the transforms are differentiable, so G still learns through them, and they are applied
with probability p per image, which ADA raises while D is overfitting and lowers when it is not.

Everything here is tensor arithmetic on the images' device: no host syncs, no Python branching on
values, so a step keeps the device busy and torch.compile traces it whole. "Zero" is 0 in the [-1, 1]
images, mid-grey, as in DiffAugment: translation pads with it and cutout fills with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

TRANSLATION_RATIO = 0.125  # the largest shift, as a share of the side
CUTOUT_RATIO = 0.5  # the side of the cut square, as a share of the image's side


def _uniform(images: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """One draw per image in [low, high), shaped to broadcast over (N, C, H, W)."""
    draw = torch.rand(images.shape[0], 1, 1, 1, device=images.device)
    return (draw * (high - low) + low).to(images.dtype)


def _memory_format(images: torch.Tensor) -> torch.memory_format:
    """Results keep the input's layout: channels_last stays channels_last for the DCGAN's D."""
    if images.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def colour(images: torch.Tensor) -> torch.Tensor:
    """Per image: brightness + U[-0.5, 0.5], saturation x U[0, 2], contrast x U[0.5, 1.5]."""
    brightness = _uniform(images, -0.5, 0.5)
    saturation = _uniform(images, 0.0, 2.0)
    contrast = _uniform(images, 0.5, 1.5)
    grey = images.mean(dim=1, keepdim=True)  # per pixel, over the channels
    mean = grey.mean(dim=(2, 3), keepdim=True)
    # the three steps in sequence, multiplied out: brightness shifts grey and mean with the pixels,
    # saturation leaves both in place, so this is half the passes over the images for the same result
    return (contrast * saturation) * images + (contrast * (1 - saturation)) * grey \
        + ((1 - contrast) * mean + brightness)


def translation(images: torch.Tensor) -> torch.Tensor:
    """Per image: a shift by a whole number of pixels, up to 1/8 of the side in each direction;
    what comes in from outside is zero."""
    n, c, h, w = images.shape
    reach_y, reach_x = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    shift_y = torch.randint(-reach_y, reach_y + 1, (n, 1, 1), device=images.device)
    shift_x = torch.randint(-reach_x, reach_x + 1, (n, 1, 1), device=images.device)
    rows = torch.arange(h, device=images.device).view(1, h, 1) - shift_y  # where each pixel comes from
    cols = torch.arange(w, device=images.device).view(1, 1, w) - shift_x
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)  # (N, H, W)
    source = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).view(n, h * w, 1).expand(n, h * w, c)
    # gather along H*W in NHWC order: a view of channels_last images, a copy of the others
    pixels = images.permute(0, 2, 3, 1).reshape(n, h * w, c).gather(1, source)
    shifted = pixels.view(n, h, w, c).permute(0, 3, 1, 2) * inside.unsqueeze(1).to(images.dtype)
    return shifted.contiguous(memory_format=_memory_format(images))


def cutout(images: torch.Tensor) -> torch.Tensor:
    """Per image: zero a square of half the side, centred anywhere in the image, so near the border
    only its part inside the image is cut (DiffAugment's cutout)."""
    n, _, h, w = images.shape
    size_y, size_x = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    # the centre ranges over the whole image, so the square is clipped alike at either border
    top = torch.randint(0, h + 1 - size_y % 2, (n, 1, 1, 1), device=images.device) - size_y // 2
    left = torch.randint(0, w + 1 - size_x % 2, (n, 1, 1, 1), device=images.device) - size_x // 2
    rows = torch.arange(h, device=images.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=images.device).view(1, 1, 1, w)
    cut = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)
    return images * (~cut).to(images.dtype)


POLICIES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "color": colour, "translation": translation, "cutout": cutout}


def augment(images: torch.Tensor, policy: Sequence[str], p: torch.Tensor) -> torch.Tensor:
    """The policies in order, each applied to each image with probability p (a 0-dim tensor on
    the images' device): one draw per image and policy, so p = 0 is the identity and p = 1 is
    DiffAugment. Every transform is computed for the whole batch and selected per image, which
    costs a little work and keeps the step free of syncs and value-dependent shapes."""
    for name in policy:
        chosen = torch.rand(images.shape[0], 1, 1, 1, device=images.device) < p
        images = torch.where(chosen, POLICIES[name](images), images)
    return images


def ada_adjust(p: torch.Tensor, sign_mean: torch.Tensor, target: float, images: torch.Tensor | int,
               ada_kimg: int) -> torch.Tensor:
    """ADA's update of p after `images` real images whose mean sign(D(real)) was `sign_mean`: up
    while D is surer of the reals than `target` says it should be (overfitting), down while it is
    less sure, at a speed that could take p from 0 to 1 in `ada_kimg` thousand images; kept in
    [0, 1]. A tensor function, so p moves on the device without a host sync."""
    change = torch.sign(sign_mean - target) * images / (ada_kimg * 1000)
    return (p + change).clamp(0.0, 1.0).to(p.dtype)
