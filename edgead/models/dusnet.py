"""DUS-Net (Liang et al., MM 2025): Noise-Gen, Down-Net, Up-Net, and the deterministic inference graph.

Shapes: B batch, G centres, K neighbours per patch, gamma points emitted per centre. All networks work in the
pipeline's normalised frame. The graph has no random ops and no loops over data: neighbourhoods are TopK over
pairwise distance matrices and the Up-Net's 1/2 and 1/4 scales are prefixes of the FPS-ordered centres (FPS order
makes every prefix a farthest-point subsample).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from edgead.formats.rundir import Run
from edgead.models.losses import pairwise_sqdist


@dataclass(frozen=True)
class Arch:
    """The network's shape. The number of centres G it runs on is the pipeline's (``groups``), passed separately."""

    gamma: int = 16  # up-sampling rate: reconstructed points per centre
    pos_dim: int = 64  # C1: centre position embedding
    patch_dim: int = 128  # C2: PointNet patch embedding
    width: int = 128  # C3: transformer width
    depth: int = 3
    heads: int = 4
    up_dim: int = 64  # Up-Net feature width
    up_k: int = 16  # Up-Net set-abstraction neighbours
    down_net: bool = True  # False: the Up-Net runs on the FPS centres themselves (ablation "Down-Net -> FPS")

    def to_dict(self) -> dict:
        return asdict(self)


def mlp(*dims: int, last_act: bool = False) -> nn.Sequential:
    """Point-wise MLP (a stack of 1x1 convolutions) acting on the last axis."""
    layers = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2 or last_act:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def noise_gen(patches: torch.Tensor, centers: torch.Tensor, alpha: float, beta: float,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1: Gaussian noise on centres (std alpha) and on neighbours (std beta), independently.

    (B, G, K, 3) patches relative to their clean centres, (B, G, 3) centres -> the noisy patches relative to the
    noisy centres (what the Down-Net sees: it never gets the clean centre) and the noisy centres.
    """
    noisy_c = centers + alpha * torch.randn(centers.shape, generator=generator, device=centers.device)
    noisy_n = patches + centers.unsqueeze(2) + beta * torch.randn(patches.shape, generator=generator,
                                                                  device=patches.device)
    return noisy_n - noisy_c.unsqueeze(2), noisy_c


def gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, N, C), (B, M, k) int64 -> (B, M, k, C): rows of x picked per batch (one flat Gather when exported)."""
    b, n, c = x.shape
    flat = idx + torch.arange(b, device=idx.device).view(b, 1, 1) * n
    return x.reshape(b * n, c)[flat]


def knn_idx(query: torch.Tensor, ref: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, M, 3), (B, N, 3) -> squared distances and indices (B, M, k) of the k nearest ref points."""
    d, idx = pairwise_sqdist(query, ref).topk(k, dim=-1, largest=False)
    return d, idx


class PointNet(nn.Module):
    """Patch encoder (two shared MLPs with a max-pooled global feature in between). (B, G, K, 3) -> (B, G, C)."""

    def __init__(self, dim: int):
        super().__init__()
        self.first = mlp(3, dim // 4, dim // 2)
        self.second = mlp(dim, dim, dim)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        f = self.first(patches)
        g = f.max(2, keepdim=True).values.expand_as(f)
        return self.second(torch.cat([g, f], -1)).max(2).values


class Block(nn.Module):
    """Pre-norm transformer block over the G patch tokens (plain matmul attention: exports to any opset)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.ff = mlp(width, 4 * width, width)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        b, g, c = x.shape
        q, k, v = self.qkv(x).view(b, g, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / (c // self.heads) ** 0.5, dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, g, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attend(self.ln1(x))
        return x + self.ff(self.ln2(x))


class DownNet(nn.Module):
    """Eqs. 2-4: patch and position embeddings -> transformer decoder -> clean centres (B, G, 3).

    The head predicts a displacement of the (noisy) input centre rather than absolute coordinates: the same
    function class, but it starts at the identity, which trains in minutes on a CPU. The head also gets the patch
    centroid (a mean-pooled skip next to the decoded features): the direct cue for the centre's displacement,
    without which the first ~100 steps sit on the identity plateau.
    """

    def __init__(self, cfg: Arch):
        super().__init__()
        self.pos = mlp(3, 128, cfg.pos_dim)
        self.patch = PointNet(cfg.patch_dim)
        self.inp = nn.Linear(cfg.pos_dim + cfg.patch_dim, cfg.width)
        self.blocks = nn.Sequential(*[Block(cfg.width, cfg.heads) for _ in range(cfg.depth)])
        self.ln = nn.LayerNorm(cfg.width)
        self.head = mlp(cfg.width + 3, cfg.width, 3)
        nn.init.zeros_(self.head[-1].weight)  # start exactly at the identity
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, patches: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        e = self.inp(torch.cat([self.pos(centers), self.patch(patches)], -1))
        return centers + self.head(torch.cat([self.ln(self.blocks(e)), patches.mean(2)], -1))


class SetAbstraction(nn.Module):
    """Eq. 9: F_i = max over the k nearest coarser-scale points j of MLP([p_j - p_i; F_j])."""

    def __init__(self, in_dim: int, out_dim: int, k: int):
        super().__init__()
        self.k = k
        self.mlp = mlp(3 + in_dim, out_dim, out_dim, out_dim, last_act=True)

    def forward(self, q: torch.Tensor, p: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        _, idx = knn_idx(q, p, self.k)
        rel = gather(p, idx) - q.unsqueeze(2)
        return self.mlp(torch.cat([rel, gather(f, idx)], -1)).max(2).values


def interpolate3(p: torch.Tensor, q: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Eq. 10: inverse-distance weights over the 3 nearest of q. (B, G, 3), (B, M, 3), (B, M, C) -> (B, G, C).

    A point of p that is also in q gets (almost exactly) its own feature: its weight 1/1e-4 dominates; 1e-4 rather
    than a tinier epsilon keeps the weights finite in FP16 engines (max 65504).
    """
    d2, idx = knn_idx(p, q, 3)
    w = 1 / (d2.sqrt() + 1e-4)
    w = w / w.sum(-1, keepdim=True)
    return (gather(f, idx) * w.unsqueeze(-1)).sum(2)


class UpNet(nn.Module):
    """Eqs. 9-11: multi-scale features of the centres (scales 1, 1/2, 1/4), fused pairwise, gamma points each."""

    def __init__(self, cfg: Arch, groups: int):
        super().__init__()
        d, self.gamma = cfg.up_dim, cfg.gamma
        k1, k2 = min(cfg.up_k, groups), min(cfg.up_k, max(groups // 2, 1))
        self.sa1, self.sa2 = SetAbstraction(3, d, k1), SetAbstraction(d, 2 * d, k2)
        self.conv0, self.conv1, self.conv2 = mlp(3, d, d, d, last_act=True), mlp(d, d, d, d, last_act=True), \
            mlp(2 * d, d, d, d, last_act=True)
        self.fuse01, self.fuse12 = mlp(2 * d, d, last_act=True), mlp(2 * d, d, last_act=True)
        self.head = mlp(2 * d, 2 * d, d, 3 * cfg.gamma)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        """(B, G, 3) centres in FPS order -> (B, G * gamma, 3) reconstructed points."""
        b, g, _ = c.shape
        p1, p2 = c[:, : max(g // 2, 1)], c[:, : max(g // 4, 1)]
        f1 = self.sa1(p1, c, c)
        f2 = self.sa2(p2, p1, f1)
        a, b1, b2 = self.conv0(c), self.conv1(interpolate3(c, p1, f1)), self.conv2(interpolate3(c, p2, f2))
        h = torch.cat([self.fuse01(torch.cat([a, b1], -1)), self.fuse12(torch.cat([b1, b2], -1))], -1)
        offsets = self.head(h).view(b, g, self.gamma, 3)
        return (c.unsqueeze(2) + offsets).reshape(b, g * self.gamma, 3)


class DusNet(nn.Module):
    """The deterministic inference graph: (G, K, 3) patches, (G, 3) centres -> ((G * gamma, 3) reconstruction,)."""

    input_names = ("patches", "centers")
    output_names = ("recon",)

    def __init__(self, cfg: Arch, groups: int):
        super().__init__()
        self.down, self.up, self.down_net = DownNet(cfg), UpNet(cfg, groups), cfg.down_net

    def centers(self, patches: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """(B, G, K, 3), (B, G, 3) -> (B, G, 3) the centres the Up-Net starts from."""
        return self.down(patches, centers) if self.down_net else centers

    def forward(self, patches: torch.Tensor, centers: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.up(self.centers(patches.unsqueeze(0), centers.unsqueeze(0)))[0],)


def inference_graph(run: Run, state: dict) -> DusNet:
    """The trained network of a run directory; G is its pipeline's ``groups``."""
    model = DusNet(Arch(**run.arch), run.pipeline["config"]["groups"])
    model.load_state_dict(state)
    return model.eval()
