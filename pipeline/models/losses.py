"""GAN losses as small pure functions of D's outputs (logits, so they stay valid under autocast).

Each loss is a pair: D's loss from its outputs on real and generated images, and G's loss from
D's outputs on generated images. `real_target` below 1 is one-sided label smoothing (Salimans et
al. 2016); the hinge and Wasserstein losses have no target to smooth.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def d_loss_nonsaturating(real: torch.Tensor, fake: torch.Tensor, real_target: float = 1.0) -> torch.Tensor:
    return _bce(real, real_target) + _bce(fake, 0.0)


def g_loss_nonsaturating(fake: torch.Tensor) -> torch.Tensor:
    """G maximises log D(G(z)) rather than minimising log(1 - D(G(z))), which saturates early."""
    return _bce(fake, 1.0)


def d_loss_hinge(real: torch.Tensor, fake: torch.Tensor, real_target: float = 1.0) -> torch.Tensor:
    return F.relu(1.0 - real.float()).mean() + F.relu(1.0 + fake.float()).mean()


def g_loss_hinge(fake: torch.Tensor) -> torch.Tensor:
    return -fake.float().mean()


def d_loss_lsgan(real: torch.Tensor, fake: torch.Tensor, real_target: float = 1.0) -> torch.Tensor:
    """Least squares (Mao et al. 2017) with targets 0 for fakes and real_target for reals."""
    return 0.5 * ((real.float() - real_target) ** 2).mean() + 0.5 * (fake.float() ** 2).mean()


def g_loss_lsgan(fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((fake.float() - 1.0) ** 2).mean()


def d_loss_wasserstein(real: torch.Tensor, fake: torch.Tensor, real_target: float = 1.0) -> torch.Tensor:
    """The critic's part of WGAN-GP; the gradient penalty is added by the caller."""
    return fake.float().mean() - real.float().mean()


def g_loss_wasserstein(fake: torch.Tensor) -> torch.Tensor:
    return -fake.float().mean()


LOSSES: dict[str, tuple[Callable[..., torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]] = {
    "nonsaturating": (d_loss_nonsaturating, g_loss_nonsaturating),
    "hinge": (d_loss_hinge, g_loss_hinge),
    "lsgan": (d_loss_lsgan, g_loss_lsgan),
    "wgan-gp": (d_loss_wasserstein, g_loss_wasserstein),
}


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                     fake: torch.Tensor) -> torch.Tensor:
    """Gulrajani et al. 2017: (||grad critic(x_hat)|| - 1)^2 on random points between real and fake."""
    mix = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    points = (mix * real.detach() + (1 - mix) * fake.detach()).requires_grad_(True)
    scores = critic(points).float()
    (grads,) = torch.autograd.grad(scores.sum(), points, create_graph=True)
    return ((grads.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


def sgan_real_fake_logit(logits: torch.Tensor) -> torch.Tensor:
    """The semi-supervised D's real-vs-fake logit from its N class logits and its fake logit:
    log p(real) - log p(fake) = logsumexp(class logits) - fake logit (one softmax, never two)."""
    return torch.logsumexp(logits[:, :-1].float(), dim=1) - logits[:, -1].float()


def sgan_class_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The supervised term for labelled real faces, -log p(y | x, y < N+1) (Salimans et al. 2016):
    cross-entropy over the N class logits alone, since a labelled face is known to be real and its
    fake logit is left to the real-vs-fake term. Labels < 0 mean unlabelled."""
    labelled = (labels >= 0).float()
    per_face = F.cross_entropy(logits[:, :-1].float(), labels.clamp(min=0), reduction="none")
    return (per_face * labelled).sum() / labelled.sum().clamp(min=1.0)  # no host sync


def acgan_class_loss(class_logits: torch.Tensor, labels: torch.Tensor,
                     sizes: tuple[int, ...]) -> torch.Tensor:
    """AC-GAN's classification term: per tag group, cross-entropy of the group's class logits
    against its labels, over the faces labelled in it ("any", label == size, is left out), summed
    over groups."""
    total = class_logits.new_zeros((), dtype=torch.float32)
    start = 0
    for g, size in enumerate(sizes):
        logits, group_labels = class_logits[:, start:start + size].float(), labels[:, g]
        labelled = (group_labels < size).float()
        per_face = F.cross_entropy(logits, group_labels.clamp(max=size - 1), reduction="none")
        total = total + (per_face * labelled).sum() / labelled.sum().clamp(min=1.0)  # no host sync
        start += size
    return total


MODE_SEEKING_POOL = 4  # the mode-seeking term compares faces at a quarter of their side (12 px at 48)
# added to each pair's ratio: bounds the push on a pair of one face (1 / 0.05) while a pair as far
# apart as two train faces (a ratio of about 0.3) still pays several times less
MODE_SEEKING_FLOOR = 0.05


def paired_labels(labels: torch.Tensor) -> torch.Tensor:
    """Labels whose last len // 2 rows repeat the first len // 2: the pairs mode_seeking_loss compares."""
    pairs = len(labels) // 2
    return torch.cat([labels[:len(labels) - pairs], labels[:pairs]])


def mode_seeking_loss(fakes: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """MSGAN's term (Mao et al. 2019): the inverse of how far apart pairs of faces drawn for the same
    labels are per distance of their noise, so that G cannot answer one label with one face. Face i
    of the first len // 2 pairs with face i of the last len // 2 (paired_labels). The faces are
    compared as small thumbnails, where colour speckle cannot pass for a different face. Each pair
    pays on its own, not the batch's mean distance (MSGAN's form): pairs asked for one hair colour
    are naturally closer than pairs asked for "any", and a batch mean let the far "any" pairs hide
    the collapsed ones, so each hair value stayed about one face."""
    pairs = len(fakes) // 2
    thumbs = F.avg_pool2d(fakes.float(), MODE_SEEKING_POOL)
    first, second = thumbs[:pairs], thumbs[len(fakes) - pairs:]
    z_first, z_second = z[:pairs].float(), z[len(z) - pairs:].float()
    ratio = (first - second).abs().flatten(1).mean(1) / (z_first - z_second).abs().mean(1)
    return (1.0 / (ratio + MODE_SEEKING_FLOOR)).mean()
