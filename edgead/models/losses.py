"""Point-set losses shared by the reconstruction detectors (training only; imports torch).

All take batched point sets: (B, N, 3) tensors. Each returns a scalar tensor averaged over the batch.
"""

from __future__ import annotations

import torch


def pairwise_sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, N, 3), (B, M, 3) -> (B, N, M) squared euclidean distances (clamped at 0)."""
    return (a.pow(2).sum(-1, keepdim=True) + b.pow(2).sum(-1).unsqueeze(-2) - 2 * a @ b.transpose(-1, -2)).clamp_min(0)


def chamfer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Bidirectional Chamfer distance with squared distances (DUS-Net eq. 7): mean NN a->b plus mean NN b->a."""
    d = pairwise_sqdist(a, b)
    return (d.min(2).values.mean(1) + d.min(1).values.mean(1)).mean()


def paired_mse(target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Eq. 5 over corresponding points: mean over points of ||p_i - p~_i||^2."""
    return (target - pred).pow(2).sum(-1).mean()


def paired_cosine(target: torch.Tensor, pred: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Eq. 6 over corresponding points: mean of 1 - cos(p_i, p~_i), position vectors from the frame origin."""
    return (1 - torch.nn.functional.cosine_similarity(target, pred, dim=-1, eps=eps)).mean()


def repulsion(points: torch.Tensor, k: int, h: float, ref: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 12, averaged per point: sum over the k nearest neighbours of eta(d) w(d), eta(d) = -d, w = exp(-d^2/h^2).

    Neighbours come from ``ref`` (B, M, 3), which must contain ``points`` (default: ``points`` itself); the point
    itself (distance 0) is skipped. ``h`` is the bandwidth of PU-Net's repulsion loss: eq. 12 prints it as 1, which
    in a unit-radius frame would push neighbours ~0.7 apart, so it is set from the expected point spacing instead.
    """
    d2 = pairwise_sqdist(points, points if ref is None else ref)
    d2 = d2.topk(k + 1, dim=-1, largest=False).values[..., 1:]
    d = (d2 + 1e-12).sqrt()
    return (-d * torch.exp(-d2 / h**2)).sum(-1).mean()


@torch.no_grad()
def sinkhorn_plan(cost: torch.Tensor, eps: float = 0.01, iters: int = 100) -> torch.Tensor:
    """Entropic optimal transport between uniform masses. (B, N, M) cost -> (B, N, M) plan, rows sum to 1/N.

    Log-domain Sinkhorn on the cost divided by its per-set mean, so ``eps`` is relative to the typical cost.
    """
    b, n, m = cost.shape
    c = cost / cost.mean((1, 2), keepdim=True).clamp_min(1e-12)
    log_a = torch.full((b, n), -torch.log(torch.tensor(float(n))).item(), dtype=cost.dtype, device=cost.device)
    log_b = torch.full((b, m), -torch.log(torch.tensor(float(m))).item(), dtype=cost.dtype, device=cost.device)
    f, g = torch.zeros_like(log_a), torch.zeros_like(log_b)
    for _ in range(iters):
        f = eps * (log_a - torch.logsumexp((g.unsqueeze(1) - c) / eps, dim=2))
        g = eps * (log_b - torch.logsumexp((f.unsqueeze(2) - c) / eps, dim=1))
    return torch.exp((f.unsqueeze(2) + g.unsqueeze(1) - c) / eps)


def emd(pred: torch.Tensor, target: torch.Tensor, eps: float = 0.01, iters: int = 100) -> torch.Tensor:
    """Earth mover's distance (euclidean ground cost, uniform masses) approximated by Sinkhorn.

    (B, N, 3), (B, M, 3) -> mean over the batch of sum_ij P_ij ||x_i - y_j||, i.e. the mean matched distance. The
    plan is computed without gradient and held fixed (envelope theorem), so gradients flow through matched pairs only.
    N may differ from M: each predicted point then carries M/N target points' mass.
    """
    cost = (pairwise_sqdist(pred, target) + 1e-12).sqrt()
    plan = sinkhorn_plan(cost.detach(), eps, iters)
    return (plan * cost).sum((1, 2)).mean()
