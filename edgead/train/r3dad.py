"""Train R3D-AD (Algorithm 2) on a handful of normal clouds and write a run directory.

Each step draws ``batch_size`` training views (FPS subsamples of M points of the normal clouds, see
:func:`view_pool`) and applies Patch-Gen to each (random rotation plus one simulated defect). The model learns
to map the noised defective view back to the clean one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from edgead import ops
from edgead.detectors import Kind
from edgead.detectors.r3dad import FPS_POOL, Config, Pipeline
from edgead.formats.rundir import WEIGHTS, write_run
from edgead.models.r3dad import R3DAD, Arch
from edgead.ops import Normalization
from edgead.train.common import (
    Preset,
    TrainLog,
    TrainLoop,
    TrainOptions,
    choose,
    cosine_lr,
    load_checkpoint,
    load_init,
    save_checkpoint,
    seeded,
    set_lr,
)
from edgead.train.patchgen import patch_gen


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1200
    batch_size: int = 8
    views: int = 128  # FPS training views drawn from the normal clouds before training
    lr: float = 1e-3
    patch_ratio: float = 1 / 32  # Patch-Gen selection ratio (Table 4a)
    rotate_deg: float = 2.0  # Patch-Gen rotation range (residual pose after ICP); 180 = any (paper)
    patch_prob: float = 1.0  # fraction of training samples given simulated defects
    patches: int = 4  # Patch-Gen defects per training sample (1 in the paper)
    ckpt_every: int = 250


PRESETS = {
    "cpu": Preset(Config(), Arch(hidden=(64, 128, 256, 128, 64), encoder=(64, 128, 256), latent_dim=128),
                  TrainConfig()),
    "paper": Preset(Config(num_points=2048, score_voxel=0.0), Arch(sample_steps=20),
                    TrainConfig(steps=40_000, batch_size=128, rotate_deg=180.0, patches=1)),
    "paper-real3d": Preset(Config(num_points=4096, score_voxel=0.0), Arch(sample_steps=20),
                           TrainConfig(steps=40_000, batch_size=128, rotate_deg=180.0, patches=1)),
}


def preset(name: str) -> Preset:
    return choose(PRESETS, name, "r3dad")


def normalised_clouds(clouds: list[np.ndarray], cfg: Config) -> tuple[Pipeline, list[np.ndarray]]:
    """Fit the normalisation, build the ICP reference from the first cloud and align the others to it."""
    clouds = [np.asarray(c, dtype=np.float32) for c in clouds]
    if not clouds:
        raise ValueError("r3dad: no training clouds")
    for i, c in enumerate(clouds):
        if c.ndim != 2 or c.shape[1] != 3 or len(c) < Pipeline.min_points or not np.isfinite(c).all():
            raise ValueError(f"r3dad: training cloud {i} must be finite (N >= {Pipeline.min_points}, 3), "
                             f"got shape {c.shape}")
    norm = Normalization.fit(clouds)
    first = norm.apply(clouds[0], ops.bbox_center(clouds[0]))
    pipe = Pipeline(cfg, norm, first[ops.farthest_point_sample(first, min(cfg.ref_points, len(first)), 0)])
    return pipe, [pipe.to_model_frame(c) for c in clouds]


def view_pool(clouds: list[np.ndarray], m: int, per_cloud: int, rng: np.random.Generator) -> np.ndarray:
    """(V, m, 3) training views: FPS from a random start on a random subset of FPS_POOL m points of each cloud.

    Views are drawn once (FPS is the costly part of a step) and then varied by Patch-Gen's rotation and defect.
    FPS rather than the paper's uniform downsampling because the runtime feeds FPS subsamples: same density.
    """
    views = []
    for cloud in clouds:
        for _ in range(per_cloud):
            if len(cloud) < m:
                views.append(cloud[rng.integers(len(cloud), size=m)])
                continue
            pre = rng.permutation(len(cloud))[: FPS_POOL * m]
            views.append(cloud[pre[ops.farthest_point_sample(cloud[pre], m, int(rng.integers(len(pre))))]])
    return np.stack(views).astype(np.float32)


def make_batch(views: np.ndarray, tc: TrainConfig, scale: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """(clean (B, M, 3), anomalous (B, M, 3)) float32 training pairs: Patch-Gen (scale S) on random views."""
    clean, anomalous = [], []
    max_angle = np.deg2rad(tc.rotate_deg)
    for _ in range(tc.batch_size):
        view = views[rng.integers(len(views))]
        if rng.random() < tc.patch_prob:
            r = patch_gen(view, rng, tc.patch_ratio, scale, max_angle)
            bad = r.anomalous
            for _ in range(tc.patches - 1):  # more defects, same pose: more off-surface points per step
                bad = patch_gen(bad, rng, tc.patch_ratio, scale, 0.0).anomalous
            clean.append(r.clean), anomalous.append(bad)
        else:
            rotated = view @ ops.random_rotation(rng, max_angle).T
            clean.append(rotated), anomalous.append(rotated)
    return np.stack(clean).astype(np.float32), np.stack(anomalous).astype(np.float32)


def train(clouds, out: Path, opts: TrainOptions, setting: Preset | None = None) -> str:
    """Train on normal clouds (sensor units) into run directory ``out``; returns its model hash. ``setting``
    replaces the preset named in ``opts``; ``opts.steps`` overrides its steps."""
    setting = setting or preset(opts.preset)
    out = Path(out)
    rng = np.random.default_rng(opts.seed)
    pipe, clouds = normalised_clouds(list(clouds), setting.pipeline)
    views = view_pool(clouds, setting.pipeline.num_points, max(1, setting.train.views // len(clouds)), rng)
    model, info = fit_network(views, out, opts, setting)
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, out / WEIGHTS)
    meta, arrays = pipe.state()
    return write_run(out, kind=Kind.R3DAD.value, pipeline=meta, arrays=arrays, arch=setting.arch.to_dict(),
                     train={**info, "clouds": len(clouds)}, files=(WEIGHTS,))


def fit_network(views: np.ndarray, out: Path, opts: TrainOptions, setting: Preset) -> tuple[R3DAD, dict]:
    """Algorithm 2 on Patch-Gen pairs made from ``views`` (V, M, 3); checkpoints and the log go to ``out``. Returns
    the model (on ``opts.device``) and the training record."""
    tc = replace(setting.train, steps=opts.steps) if opts.steps is not None else setting.train
    rng, gen = seeded(opts.seed + 1)  # not the generator that drew the views
    model = R3DAD(setting.arch)
    if opts.init:
        try:
            model.load_state_dict(load_init(opts.init))
        except RuntimeError as exc:  # another architecture: say so in one line
            raise ValueError(f"{opts.init}: its weights do not fit the {opts.preset!r} preset's network "
                             f"({str(exc).splitlines()[1].strip()}); pre-train with the same --preset") from None
    ck = load_checkpoint(out, model, rng, gen) if opts.resume else None
    start = ck["step"] if ck is not None else 0
    model.to(opts.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr)
    if ck is not None:
        optimizer.load_state_dict(ck["optimizer"])
    log = TrainLog(out, start if ck is not None else None)
    model.train()
    t0 = time.perf_counter()
    done = start

    def checkpoint(stage: int, step: int) -> None:
        save_checkpoint(out, model, optimizer, stage=stage, step=step, rng=rng, gen=gen)

    with TrainLoop("r3dad", {"r3dad": tc.steps}, out, opts, checkpoint, (0, start)) as loop:
        for step in loop.steps(0, start):
            done = step + 1
            clean, anomalous = (torch.from_numpy(a).to(opts.device)
                                for a in make_batch(views, tc, setting.arch.patch_scale, rng))
            lr = cosine_lr(step, tc.steps, tc.lr)
            set_lr(optimizer, lr)
            loss = model.get_loss(clean, anomalous, generator=gen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            log.write({"step": step + 1, "loss": loss.item(), "lr": lr, "time_s": time.perf_counter() - t0})
            loop.postfix(loss=f"{loss.item():.4f}")
            if (step + 1) % tc.ckpt_every == 0 or step + 1 == tc.steps:
                checkpoint(0, step + 1)
    log.close()
    info = {"preset": opts.preset, "seed": opts.seed, "config": asdict(tc), "steps": done,
            "time_budget": opts.time_budget, "time_s": round(time.perf_counter() - t0, 1),
            "init": str(opts.init) if opts.init else None}
    return model, info
