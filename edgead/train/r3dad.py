"""Train R3D-AD (Algorithm 2) on a handful of normal clouds and write a run directory.

Each step draws ``batch_size`` training views (FPS subsamples of M points of the normal clouds, see
:func:`view_pool`) and applies Patch-Gen to each (random rotation plus one simulated defect). The model learns
to map the noised defective view back to the clean one.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from edgead import ops
from edgead.detectors import save_pipeline
from edgead.detectors.r3dad import FPS_POOL, Pipeline, R3DADConfig, preset
from edgead.models import WEIGHTS
from edgead.models.r3dad import R3DAD
from edgead.ops import Normalization
from edgead.patchgen import patch_gen, random_rotation


def normalised_clouds(clouds: list[np.ndarray], cfg: R3DADConfig) -> tuple[Normalization, np.ndarray, list]:
    """Fit the normalisation, build the ICP reference from the first cloud and align the others to it."""
    clouds = [np.asarray(c, dtype=np.float32) for c in clouds]
    for i, c in enumerate(clouds):
        if c.ndim != 2 or c.shape[1] != 3 or len(c) < Pipeline.min_points or not np.isfinite(c).all():
            raise ValueError(f"r3dad: training cloud {i} must be finite (N >= {Pipeline.min_points}, 3), "
                             f"got shape {c.shape}")
    if not clouds:
        raise ValueError("r3dad: no training clouds")
    norm = Normalization.fit(clouds)
    first = norm.apply(clouds[0], ops.bbox_center(clouds[0]))
    reference = first[ops.farthest_point_sample(first, min(cfg.ref_points, len(first)), 0)]
    pipe = Pipeline(cfg, norm, reference)
    return norm, reference, [pipe.normalize(c) for c in clouds]


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


def make_batch(views: np.ndarray, cfg: R3DADConfig, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """(clean (B, M, 3), anomalous (B, M, 3)) float32 training pairs: Patch-Gen on random views."""
    clean, anomalous = [], []
    max_angle = np.deg2rad(cfg.rotate_deg)
    for _ in range(cfg.batch_size):
        view = views[rng.integers(len(views))]
        if rng.random() < cfg.patch_prob:
            r = patch_gen(view, rng, cfg.patch_ratio, cfg.patch_scale, max_angle)
            bad = r.anomalous
            for _ in range(cfg.patches - 1):  # more defects, same pose: more off-surface points per step
                bad = patch_gen(bad, rng, cfg.patch_ratio, cfg.patch_scale, 0.0).anomalous
            clean.append(r.clean), anomalous.append(bad)
        else:
            rotated = view @ random_rotation(rng, max_angle).T
            clean.append(rotated), anomalous.append(rotated)
    return np.stack(clean).astype(np.float32), np.stack(anomalous).astype(np.float32)


def lr_at(step: int, cfg: R3DADConfig) -> float:
    """Constant lr for the first half, then linear decay to 10% (the paper gives only the initial lr)."""
    half = cfg.steps / 2
    return cfg.lr * (1.0 if step < half else 1.0 - 0.9 * (step - half) / max(half, 1))


def load_init(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("model", state)


def train(clouds, out: Path, opts) -> None:
    """The ``edgead train r3dad`` entry point: the preset's configuration, ``opts.steps`` overriding its steps."""
    fit(preset(opts.preset, **({"steps": opts.steps} if opts.steps else {})), clouds, out, opts)


def fit(cfg: R3DADConfig, clouds, out: Path, opts) -> None:
    """Train a model of configuration ``cfg`` on normal clouds (sensor units) into run directory ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    norm, reference, clouds = normalised_clouds(list(clouds), cfg)
    views = view_pool(clouds, cfg.num_points, max(1, cfg.views // len(clouds)), rng)
    model = R3DAD(cfg).to(opts.device)
    optim = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    log_path, start = out / "train_log.jsonl", 0
    if opts.resume and (ckpt_dir / "last.pt").exists():
        ck = torch.load(ckpt_dir / "last.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"]), optim.load_state_dict(ck["optim"])
        start, rng.bit_generator.state = ck["step"], ck["np_rng"]
        torch.set_rng_state(ck["torch_rng"])
        lines = log_path.read_text().splitlines() if log_path.exists() else []
        log_path.write_text("".join(f"{x}\n" for x in lines if json.loads(x)["step"] <= start))  # drop steps redone
    else:
        if opts.init:
            model.load_state_dict(load_init(opts.init))
        log_path.write_text("")

    def checkpoint(step: int) -> None:
        torch.save({"model": model.state_dict(), "optim": optim.state_dict(), "step": step,
                    "np_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}, ckpt_dir / "last.pt")

    from tqdm import tqdm

    model.train()
    t0 = time.perf_counter()
    with log_path.open("a") as log:
        bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not opts.progress, desc="r3dad")
        for step in bar:
            clean, anomalous = (torch.from_numpy(a).to(opts.device) for a in make_batch(views, cfg, rng))
            for g in optim.param_groups:
                g["lr"] = lr_at(step, cfg)
            loss = model.get_loss(clean, anomalous)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            rec = {"step": step + 1, "loss": loss.item(), "lr": lr_at(step, cfg), "time_s": time.perf_counter() - t0}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{rec['loss']:.4f}")
            if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps:
                checkpoint(step + 1)

    weights = out / WEIGHTS
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    extra = {"name": "r3dad", "model_hash": digest,
             "train": {"preset": opts.preset, "seed": opts.seed, "clouds": len(clouds), "config": asdict(cfg)}}
    save_pipeline(Pipeline(cfg, norm, reference), out / "model.json", out / "pipeline.npz", extra)
