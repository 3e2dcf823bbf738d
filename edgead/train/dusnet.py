"""Two-stage DUS-Net training (section 3.4): Down-Net with Noise-Gen, then Up-Net on the frozen Down-Net's centres.

Without the paper's ShapeNetPart / Visionair pre-training, both stages train on the category's few normal scans,
augmented (small pose and scale jitter, random thinning, random FPS start, occasional one-sided crops). The
augmented samples are drawn once per run into a pool; Noise-Gen draws fresh noise at every step.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from edgead import ops
from edgead.detectors import save_pipeline
from edgead.detectors.dusnet import DusNetConfig, Pipeline, preset, score_points
from edgead.losses import chamfer, emd, paired_cosine, paired_mse, repulsion
from edgead.models import WEIGHTS
from edgead.models.dusnet import DusNet, gather, knn_idx, noise_gen

REF_POINTS = 4096  # training-reference points stored for ICP alignment
CKPT_EVERY = 100  # steps between checkpoints (and at the end of each stage)


def random_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A rotation about a random axis by at most ``max_deg`` degrees. -> (3, 3) float32."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    a = np.deg2rad(rng.uniform(-max_deg, max_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return (np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k).astype(np.float32)


def augment(x: np.ndarray, rng: np.random.Generator, crop_p: float = 0.3) -> np.ndarray:
    """Pose jitter (ICP residuals), scale jitter, random thinning and, with probability crop_p, a one-sided view."""
    x = x @ random_rotation(rng, 5.0).T * rng.uniform(0.95, 1.05) + rng.normal(0, 0.02, 3)
    if rng.random() < crop_p:  # keep the half seen from a random direction (+ a margin): a one-sided scan
        v = rng.normal(size=3)
        keep = x @ (v / np.linalg.norm(v)) > rng.uniform(-0.4, 0.0)
        x = x[keep] if keep.sum() > 64 else x
    keep = rng.random(len(x)) < rng.uniform(0.6, 1.0)
    return x[keep if keep.sum() > 64 else slice(None)].astype(np.float32)


def make_pool(pipe: Pipeline, frames: list[np.ndarray], n: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """n augmented samples: patches (n, G, K, 3) and centres (n, G, 3), grouped exactly as the pipeline does."""
    patches, centers = [], []
    for i in range(n):
        x = augment(frames[i % len(frames)], rng)
        x = x[rng.permutation(len(x))[: pipe.config.thin]] if pipe.config.thin else x
        p, c = pipe.group(x, start=int(rng.integers(len(x))))
        patches.append(p)
        centers.append(c)
    return {"patches": torch.from_numpy(np.stack(patches)), "centers": torch.from_numpy(np.stack(centers))}


def down_losses(model: DusNet, batch: dict, cfg: DusNetConfig, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Eqs. 5-8 on one batch of Noise-Gen patches: L_MSE + L_COS + L_CD between clean and predicted centres."""
    noisy_p, noisy_c = noise_gen(batch["patches"], batch["centers"], cfg.alpha, cfg.beta, gen)
    pred = model.down(noisy_p, noisy_c)
    target = batch["centers"]
    parts = {"mse": paired_mse(target, pred), "cos": paired_cosine(target, pred), "cd": chamfer(target, pred)}
    return {"loss": sum(parts.values()), **parts}


def up_losses(model: DusNet, centers: torch.Tensor, batch: dict, cfg: DusNetConfig, h: float) -> dict:
    """Eqs. 12-14 on one batch: L_REP + L_EMD between the reconstruction and the patch points P_G.

    Both are local, per centre: EMD matches each centre's gamma points to the K points of its patch (Sinkhorn,
    see :func:`edgead.losses.emd`), repulsion acts among the points of a centre and its 3 nearest centres.
    """
    b, g, k, _ = batch["patches"].shape
    recon = model.up(centers).view(b, g, cfg.gamma, 3)
    truth = batch["patches"] + batch["centers"].unsqueeze(2)
    l_emd = emd(recon.reshape(b * g, cfg.gamma, 3), truth.reshape(b * g, k, 3), eps=cfg.emd_eps, iters=cfg.emd_iters)
    _, near = knn_idx(centers, centers, min(4, g))
    local = gather(recon.reshape(b, g, cfg.gamma * 3), near).reshape(b * g, -1, 3)  # own points come first
    l_rep = repulsion(recon.reshape(b * g, cfg.gamma, 3), min(4, local.shape[1] - 1), h, local)
    return {"loss": l_rep + l_emd, "rep": l_rep, "emd": l_emd}


def spacing(centers: torch.Tensor, gamma: int) -> float:
    """Expected spacing of reconstructed points: mean nearest-centre distance / sqrt(gamma) (repulsion bandwidth)."""
    d, _ = knn_idx(centers, centers, 2)
    return float(d[..., 1].sqrt().mean()) / gamma**0.5


@torch.no_grad()
def fit_baseline(pipe: Pipeline, model: DusNet, frames: list[np.ndarray], k: int = 8) -> np.ndarray:
    """(M,) mean eq. 16 score (sensor units) of the k training points nearest each reference point, over the
    (aligned, unaugmented) training frames: the reconstruction error a normal part has there."""
    model.eval()
    total = np.zeros(len(pipe.reference), np.float64)
    for x in frames:
        patches, centers = pipe.group(x)
        (recon,) = model(torch.from_numpy(patches), torch.from_numpy(centers))
        s = score_points(x, recon.cpu().numpy(), pipe.config.score, pipe.config.normal_k) * pipe.normalization.scale
        _, idx = ops.knn(pipe.reference, x, min(k, len(x)))
        total += s[idx].mean(1)
    return (total / len(frames)).astype(np.float32)


def model_hash(state: dict) -> str:
    buf = io.BytesIO()
    torch.save(state, buf)
    return hashlib.sha256(buf.getvalue()).hexdigest()


def load_init(path: Path) -> dict:
    """A state dict from a checkpoint (``{"model": ...}``) or a run's weights.pt."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return obj["model"] if "model" in obj else obj


def fit_pipeline(clouds: list[np.ndarray], cfg: DusNetConfig) -> tuple[Pipeline, list[np.ndarray]]:
    """Normalisation and ICP reference from the normal scans; returns the pipeline and the scans in its frame."""
    pipe = Pipeline(cfg, ops.Normalization.fit(clouds))
    first = pipe.to_model_frame(clouds[0])  # no reference yet: centred and scaled only
    ref = first[ops.farthest_point_sample(first, min(REF_POINTS, len(first)))]
    pipe = Pipeline(cfg, pipe.normalization, ref)
    return pipe, [pipe.thin(pipe.to_model_frame(c)) for c in clouds]


def train(clouds: list[np.ndarray], out: Path, opts, config: DusNetConfig | None = None) -> None:
    """Train on normal clouds (sensor units) and write the run directory ``out``.

    ``config`` replaces the preset named in ``opts`` (the ablation benchmark trains variants this way).
    """
    if not clouds:
        raise ValueError("dusnet: no training clouds")
    clouds = [np.asarray(c, dtype=np.float32) for c in clouds]
    cfg = config or preset(opts.preset)
    if opts.steps is not None:
        cfg = replace(cfg, steps_down=opts.steps, steps_up=opts.steps)
    if not cfg.down_net:
        cfg = replace(cfg, steps_down=0)
    torch.manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    gen = torch.Generator().manual_seed(opts.seed)
    device = torch.device(opts.device)
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    log_path = out / "train_log.jsonl"

    t0, c0 = time.time(), time.process_time()  # wall and CPU time (the CPU time is the budget on a shared host)
    pipe, frames = fit_pipeline(clouds, cfg)
    pool = make_pool(pipe, frames, cfg.pool, rng)
    model = DusNet(cfg)
    if opts.init is not None:
        model.load_state_dict(load_init(Path(opts.init)))
    model.to(device)
    stages = [("down", cfg.steps_down), ("up", cfg.steps_up)]
    stage_i, step = 0, 0
    opt = torch.optim.Adam(model.down.parameters(), lr=cfg.lr)
    if opts.resume and (ckpt_dir / "last.pt").exists():
        ck = torch.load(ckpt_dir / "last.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        stage_i, step = ck["stage"], ck["step"]
        opt = torch.optim.Adam((model.down if stage_i == 0 else model.up).parameters(), lr=cfg.lr)
        opt.load_state_dict(ck["opt"])
        gen.manual_seed(opts.seed + 7919 * (stage_i * 100003 + step))
    elif not opts.resume:
        log_path.write_text("")

    def save_ckpt(stage_i: int, step: int) -> None:
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "stage": stage_i, "step": step},
                   ckpt_dir / "last.pt")

    pool = {k: v.to(device) for k, v in pool.items()}
    pred_centers, h = None, 0.0
    with log_path.open("a") as log:
        while stage_i < len(stages):
            name, total = stages[stage_i]
            if name == "up":
                model.down.eval().requires_grad_(False)
                with torch.no_grad():  # the frozen Down-Net's noise-free centres, as at inference
                    pred_centers = torch.cat([model.centers(pool["patches"][i: i + 8], pool["centers"][i: i + 8])
                                              for i in range(0, cfg.pool, 8)])
                h = spacing(pool["centers"], cfg.gamma)
            bar = tqdm(range(step, total), desc=f"dusnet {name}-net", disable=not opts.progress, initial=step,
                       total=total)
            for step in bar:
                sel = torch.randint(cfg.pool, (cfg.batch,), generator=gen)
                batch = {k: v[sel] for k, v in pool.items()}
                if name == "down":
                    losses = down_losses(model, batch, cfg, gen)
                else:
                    losses = up_losses(model, pred_centers[sel], batch, cfg, h)
                for group in opt.param_groups:  # cosine decay, a pure function of the step (resume-safe)
                    group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / max(total, 1)))
                opt.zero_grad(set_to_none=True)
                losses["loss"].backward()
                opt.step()
                vals = {k: round(v.item(), 6) for k, v in losses.items()}
                bar.set_postfix(loss=vals["loss"])
                if step % 10 == 0 or step == total - 1:
                    log.write(json.dumps({"stage": name, "step": step, **vals, "time_s": round(time.time() - t0, 2),
                                         "cpu_s": round(time.process_time() - c0, 2)})
                              + "\n")
                    log.flush()
                if (step + 1) % CKPT_EVERY == 0:
                    save_ckpt(stage_i, step + 1)
            stage_i, step = stage_i + 1, 0
            opt = torch.optim.Adam(model.up.parameters(), lr=cfg.lr)
            save_ckpt(stage_i, 0)

    model.cpu()
    pipe = Pipeline(cfg, pipe.normalization, pipe.reference, fit_baseline(pipe, model, frames))
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, out / WEIGHTS)
    info = {"preset": opts.preset, "seed": opts.seed, "device": str(device), "steps_down": cfg.steps_down,
            "steps_up": cfg.steps_up, "n_clouds": len(clouds), "repulsion_h": h, "time_s": round(time.time() - t0, 1),
            "cpu_s": round(time.process_time() - c0, 1),
            "init": str(opts.init) if opts.init else None, "config": asdict(cfg)}
    save_pipeline(pipe, out / "model.json", out / "pipeline.npz",
                  extra={"name": "dusnet", "model_hash": model_hash(state), "train": info})
