"""R3D-AD networks: PointNet shape encoder, PointwiseNet denoiser, DDPM with step-wise displacement decoding.

What the reverse diffusion starts from. Algorithm 3 is read literally: the diffused variable is the point-wise
*displacement* Delta, not the point positions. Sampling starts from Delta^(T) ~ N(0, I) (one 3-vector per input
point), every reverse step (eq. 6) updates the displacement, and the reconstruction is P_hat = P' + Delta^(0).
Point i of the reconstruction is therefore point i of the input moved by its own displacement: the reconstruction is
aligned with the input by construction ("consistent spatial transform"), normal regions decode to ~zero
displacement and only anomalous regions move, which is what the distance scores need. A point-wise network cannot
produce a point-specific displacement without knowing where the point is, so epsilon_theta sees the input point
P' next to Delta^(t) (a 6-d point feature; c carries the global shape, as in the paper).

Displacements are diffused in units of the Patch-Gen scale S (Delta / S is ~unit size, like the N(0, I) noise;
in normalised units the targets are ~0.1 and the gradients vanish under Adam's epsilon).

Training (Algorithm 2, "relative"): Delta^(0) = P' - P_a is the displacement that removes the Patch-Gen defect
(zero outside the patch). It is noised with eq. 2, the network predicts the noise from (P_a, Delta^(t), beta_t, c),
and the loss compares P_a + Delta_hat, Delta_hat being the one-step estimate implied by the predicted noise, with the
clean P' (eq. 9).

The other reading, diffusing positions from the masked input sqrt(abar_T) P' + sqrt(1 - abar_T) z (abar_200 =
0.132), was implemented first and measured (docs/r3dad.md): its reconstructions are blurred by ~2 mm on 60 mm parts,
above the size of the defects, and its point AUROC stayed below 0.5.

Samplers: ``sample_ddpm`` is the paper's stochastic T-step reverse process (eq. 6, posterior variance);
``sample_ddim`` is the deterministic DDIM (eta = 0) update on a subsequence of the T steps, started from a fixed
noise tensor. ``inference_graph`` unrolls the latter for export: no random op and no data-dependent control flow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgead.formats.rundir import Run
from edgead.models.losses import paired_mse


@dataclass(frozen=True)
class Arch:
    """The network and its diffusion. The number of points M it runs on is the pipeline's (``num_points``)."""

    latent_dim: int = 256  # shape embedding c
    hidden: tuple[int, ...] = (128, 256, 512, 256, 128)  # PointwiseNet concatenate-squash widths
    encoder: tuple[int, ...] = (128, 128, 256, 512)  # PointNet shared-MLP widths
    num_steps: int = 200  # T of the DDPM
    beta_1: float = 1e-4
    beta_T: float = 0.02
    sample_steps: int = 10  # deterministic DDIM steps (a subsequence of the T training steps)
    noise_seed: int = 0  # seed of the fixed start noise stored in the graph
    patch_scale: float = 0.1  # Patch-Gen's scaling factor S (Table 4b): displacements are diffused in units of S

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(self.hidden))
        object.__setattr__(self, "encoder", tuple(self.encoder))
        if not 1 <= self.sample_steps <= self.num_steps:
            raise ValueError(f"r3dad: sample_steps must be in 1..{self.num_steps}, got {self.sample_steps}")

    def to_dict(self) -> dict:
        return asdict(self)


class PointNetEncoder(nn.Module):
    """PointNet: shared per-point MLP, max-pool, MLP head. (B, N, 3) -> (B, latent) shape embedding c."""

    def __init__(self, widths: tuple[int, ...], latent: int):
        super().__init__()
        layers, c_in = [], 3
        for w in widths:
            layers += [nn.Conv1d(c_in, w, 1), nn.BatchNorm1d(w), nn.ReLU()]
            c_in = w
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(c_in, c_in // 2), nn.ReLU(), nn.Linear(c_in // 2, latent))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mlp(x.transpose(1, 2)).max(dim=2).values)


class ConcatSquashLinear(nn.Module):
    """Linear layer whose output is gated and shifted by the context: W x * sigmoid(G ctx) + B ctx."""

    def __init__(self, d_in: int, d_out: int, d_ctx: int):
        super().__init__()
        self.layer = nn.Linear(d_in, d_out)
        self.gate = nn.Linear(d_ctx, d_out)
        self.bias = nn.Linear(d_ctx, d_out, bias=False)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """(B, N, d_in), (B, 1, d_ctx) -> (B, N, d_out)."""
        return self.layer(x) * torch.sigmoid(self.gate(ctx)) + self.bias(ctx)


class PointwiseNet(nn.Module):
    """Per-point concatenate-squash MLP: (Delta_t, P, beta_t, c) -> the clean displacement estimate Delta_hat.

    Context = (beta, sin beta, cos beta) concatenated with c (section 3.3); the point's own position P is
    concatenated to its displacement Delta_t as input. The residual function that turns it into epsilon_theta is
    :meth:`R3DAD.eps`.
    """

    def __init__(self, hidden: tuple[int, ...], latent: int):
        super().__init__()
        dims = (6, *hidden, 3)
        pairs = zip(dims[:-1], dims[1:], strict=True)
        self.layers = nn.ModuleList(ConcatSquashLinear(a, b, latent + 3) for a, b in pairs)
        last = self.layers[-1]  # start at Delta_hat = 0 (normal): large initial outputs saturate the last gate and
        for w in (last.layer.weight, last.layer.bias, last.bias.weight):  # freeze the net into a point-blind constant
            nn.init.zeros_(w)

    def forward(self, x: torch.Tensor, points: torch.Tensor, beta: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Delta_t (B, N, 3), P (B, N, 3), (B,), (B, latent) -> (B, N, 3) Delta_hat."""
        beta = beta.view(-1, 1)
        ctx = torch.cat([beta, torch.sin(beta), torch.cos(beta), c], dim=1).unsqueeze(1)
        h = torch.cat([points, x], dim=-1)
        for i, layer in enumerate(self.layers):
            h = layer(h, ctx)
            if i < len(self.layers) - 1:
                h = F.leaky_relu(h)
        return h


def ddpm_schedule(num_steps: int, beta_1: float, beta_T: float) -> dict[str, torch.Tensor]:
    """Linear betas; index 0 is the clean state (beta_0 = 0, abar_0 = 1). Each tensor (T + 1,) float32.

    sigma is the DDPM posterior standard deviation sqrt(beta_t (1 - abar_(t-1)) / (1 - abar_t)).
    """
    betas = torch.linspace(beta_1, beta_T, num_steps, dtype=torch.float64)
    betas = torch.cat([torch.zeros(1, dtype=torch.float64), betas])
    alphas = 1 - betas
    abar = torch.cumprod(alphas, 0)
    sigma = torch.zeros_like(betas)
    sigma[1:] = (betas[1:] * (1 - abar[:-1]) / (1 - abar[1:])).sqrt()
    return {k: v.float() for k, v in dict(betas=betas, alphas=alphas, abar=abar, sigma=sigma).items()}


def ddim_timesteps(num_steps: int, sample_steps: int) -> list[int]:
    """The deterministic sampler's steps: ``sample_steps`` evenly spaced from T down to 1, then 0 (clean)."""
    ts = torch.linspace(num_steps, 1, sample_steps, dtype=torch.float64).round().long().tolist()
    return [*dict.fromkeys(ts), 0]


class R3DAD(nn.Module):
    def __init__(self, cfg: Arch):
        super().__init__()
        self.cfg = cfg
        self.encoder = PointNetEncoder(cfg.encoder, cfg.latent_dim)
        self.net = PointwiseNet(cfg.hidden, cfg.latent_dim)
        for k, v in ddpm_schedule(cfg.num_steps, cfg.beta_1, cfg.beta_T).items():
            self.register_buffer(k, v, persistent=False)
        self.abar_list = self.abar.tolist()  # Python floats: the sampler's constants, untouched by .half()

    def predict(self, d_t: torch.Tensor, points: torch.Tensor, t: torch.Tensor, c: torch.Tensor):
        """(Delta_hat, epsilon_theta) at step t. (B, N, 3), (B, N, 3), (B,) long, (B, latent) -> 2 x (B, N, 3).

        epsilon_theta is a residual function of its input, eps = (Delta_t - sqrt(abar_t) f) / sqrt(1 - abar_t), so
        that the implied one-step estimate (Algorithm 2's "displacement prediction") is f itself. Normal points
        need f ~ 0 at every t, which a small network gets right; predicting eps directly would need a gain of
        1 / sqrt(1 - abar_t) (up to 100) on Delta_t and was measured to leave ~15 mm of displacement noise.
        """
        abar = self.abar[t].view(-1, 1, 1)
        delta = self.net(d_t, points, self.betas[t], c)
        return delta, (d_t - abar.sqrt() * delta) / (1 - abar).sqrt()

    def get_loss(self, clean: torch.Tensor, anomalous: torch.Tensor, t: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Algorithm 2: (B, N, 3) clean P', (B, N, 3) Patch-Gen P_a^(0) -> scalar relative reconstruction loss.
        ``generator`` (a CPU generator) draws t and the noise, so a resumed run draws what it would have."""
        b = clean.shape[0]
        if t is None:
            t = torch.randint(1, self.cfg.num_steps + 1, (b,), generator=generator).to(clean.device)
        c = self.encoder(anomalous)
        abar = self.abar[t].view(-1, 1, 1)
        d0 = (clean - anomalous) / self.cfg.patch_scale
        noise = torch.randn(anomalous.shape, generator=generator).to(anomalous.device)
        d_t = abar.sqrt() * d0 + (1 - abar).sqrt() * noise
        delta, _ = self.predict(d_t, anomalous, t, c)
        return paired_mse(d0, delta)  # eq. 9, ||P' - (P_a + Delta_hat)||^2, in units of S

    def sample_ddpm(self, points: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The paper's stochastic T-step reverse process (eq. 6). (B, N, 3) -> (B, N, 3) reconstruction."""
        c = self.encoder(points)
        rand = lambda: torch.randn(points.shape, generator=generator, device=points.device)  # noqa: E731
        d = rand()
        for t in range(self.cfg.num_steps, 0, -1):
            tt = torch.full((points.shape[0],), t, device=points.device, dtype=torch.long)
            _, eps = self.predict(d, points, tt, c)
            d = (d - self.betas[t] / (1 - self.abar[t]).sqrt() * eps) / self.alphas[t].sqrt()
            if t > 1:
                d = d + self.sigma[t] * rand()
        return points + self.cfg.patch_scale * d

    def sample_ddim(self, points: torch.Tensor, z: torch.Tensor, steps: list[int]) -> torch.Tensor:
        """Deterministic DDIM (eta = 0) from Delta^(T) = z. (B, N, 3), (N, 3), steps -> (B, N, 3) P' + S Delta^(0)."""
        c = self.encoder(points)
        d = z.expand_as(points)
        abar = self.abar_list
        for t, t_next in zip(steps[:-1], steps[1:], strict=True):
            tt = torch.full((points.shape[0],), t, device=points.device, dtype=torch.long)
            d0, _ = self.predict(d, points, tt, c)
            # sqrt(1 - abar_next) * eps, with eps from predict() written out: the ratio of the two sqrt(1 - abar)
            # terms is a float64 constant, so an FP16 engine never divides by sqrt(1 - abar_1) (0 in FP16)
            k = ((1 - abar[t_next]) / (1 - abar[t])) ** 0.5
            d = abar[t_next] ** 0.5 * d0 + k * (d - abar[t] ** 0.5 * d0)
        return points + self.cfg.patch_scale * d


def start_noise(num_points: int, seed: int) -> torch.Tensor:
    """(M, 3) float32: the fixed Delta^(T) of the deterministic sampler (CPU generator: same on every machine)."""
    return torch.randn(num_points, 3, generator=torch.Generator().manual_seed(seed))


class InferenceGraph(nn.Module):
    """points (M, 3) -> recon (M, 3): encoder + the DDIM sampler unrolled over a fixed step list."""

    input_names = ("points",)
    output_names = ("recon",)

    def __init__(self, model: R3DAD, num_points: int):
        super().__init__()
        cfg = model.cfg
        self.model = model
        self.steps = ddim_timesteps(cfg.num_steps, cfg.sample_steps)
        self.register_buffer("z", start_noise(num_points, cfg.noise_seed))

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.model.sample_ddim(points.unsqueeze(0), self.z, self.steps)[0],)


def inference_graph(run: Run, state: dict) -> nn.Module:
    """The trained network of a run directory, sampling on its pipeline's ``num_points``."""
    model = R3DAD(Arch(**run.arch))
    model.load_state_dict(state)
    return InferenceGraph(model, run.pipeline["config"]["num_points"]).eval()
