"""Two-stage DUS-Net training (section 3.4): Down-Net with Noise-Gen, then Up-Net on the frozen Down-Net's centres.

Both stages train on the category's few normal scans, augmented (small pose and scale jitter, random thinning,
random FPS start, occasional one-sided crops). The augmented samples are drawn once per run into a pool; Noise-Gen
draws fresh noise at every step. The ``cpu`` preset starts from weights pre-trained on a procedural corpus of other
parts (``PRETRAINED``: ``edgead pretrain dusnet`` on ``edgead synth --corpus 400``, the paper's ShapeNetPart /
Visionair pre-training done on shapes that can be had here; measured in docs/dusnet.md), unless told otherwise.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from edgead import ops
from edgead.detectors import Kind
from edgead.detectors.dusnet import Config, Distance, Pipeline, score_points
from edgead.formats.rundir import WEIGHTS, write_run
from edgead.models.dusnet import Arch, DusNet, gather, knn_idx, noise_gen
from edgead.models.losses import chamfer, emd, paired_cosine, paired_mse, repulsion
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

REF_POINTS = 4096  # training-reference points stored for ICP alignment
CKPT_EVERY = 100  # steps between checkpoints (and at the end of each stage)


@dataclass(frozen=True)
class TrainConfig:
    alpha: float = 0.08  # Noise-Gen std on centres (normalised units)
    beta: float = 0.15  # Noise-Gen std on neighbours (normalised units)
    emd_eps: float = 0.1  # per-patch Sinkhorn: entropy (relative to the mean cost) and iterations
    emd_iters: int = 10
    steps_down: int = 2000  # measured (docs/dusnet.md): 200 + 100 steps left points at chance; ~330 s on 2 cores
    steps_up: int = 1000
    batch: int = 4
    lr: float = 1e-3
    pool: int = 96  # augmented training samples generated per run (Noise-Gen adds fresh noise every step)


PRESETS = {
    "cpu": Preset(Config(), Arch(), TrainConfig()),
    "paper": Preset(Config(groups=8192, group_size=512, thin=0, score=Distance.POINT, score_voxel=0.0),
                    Arch(gamma=8, pos_dim=384, patch_dim=384, width=384, depth=4, heads=6, up_dim=128, up_k=32),
                    TrainConfig(steps_down=20000, steps_up=20000, batch=4, pool=256)),
    "tiny": Preset(Config(groups=64, group_size=16, thin=2048, icp_points=512),
                   Arch(gamma=8, pos_dim=16, patch_dim=32, width=32, depth=1, heads=2, up_dim=16, up_k=8),
                   TrainConfig(steps_down=30, steps_up=30, lr=3e-3, pool=8)),
}


def preset(name: str) -> Preset:
    return choose(PRESETS, name, "dusnet")


def augment(x: np.ndarray, rng: np.random.Generator, crop_p: float = 0.3) -> np.ndarray:
    """Pose jitter (ICP residuals), scale jitter, random thinning and, with probability crop_p, a one-sided view."""
    x = x @ ops.random_rotation(rng, np.radians(5.0)).T * rng.uniform(0.95, 1.05) + rng.normal(0, 0.02, 3)
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


def down_losses(model: DusNet, batch: dict, cfg: TrainConfig, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Eqs. 5-8 on one batch of Noise-Gen patches: L_MSE + L_COS + L_CD between clean and predicted centres."""
    noisy_p, noisy_c = noise_gen(batch["patches"], batch["centers"], cfg.alpha, cfg.beta, gen)
    pred = model.down(noisy_p, noisy_c)
    target = batch["centers"]
    parts = {"mse": paired_mse(target, pred), "cos": paired_cosine(target, pred), "cd": chamfer(target, pred)}
    return {"loss": sum(parts.values()), **parts}


def up_losses(model: DusNet, centers: torch.Tensor, batch: dict, cfg: TrainConfig, gamma: int, h: float) -> dict:
    """Eqs. 12-14 on one batch: L_REP + L_EMD between the reconstruction and the patch points P_G.

    Both are local, per centre: EMD matches each centre's gamma points to the K points of its patch (Sinkhorn,
    see :func:`edgead.models.losses.emd`), repulsion acts among the points of a centre and its 3 nearest centres.
    """
    b, g, k, _ = batch["patches"].shape
    recon = model.up(centers).view(b, g, gamma, 3)
    truth = batch["patches"] + batch["centers"].unsqueeze(2)
    l_emd = emd(recon.reshape(b * g, gamma, 3), truth.reshape(b * g, k, 3), eps=cfg.emd_eps, iters=cfg.emd_iters)
    _, near = knn_idx(centers, centers, min(4, g))
    local = gather(recon.reshape(b, g, gamma * 3), near).reshape(b * g, -1, 3)  # own points come first
    l_rep = repulsion(recon.reshape(b * g, gamma, 3), min(4, local.shape[1] - 1), h, local)
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
    device = next(model.parameters()).device
    total = np.zeros(len(pipe.reference), np.float64)
    for x in frames:
        patches, centers = pipe.group(x)
        (recon,) = model(torch.from_numpy(patches).to(device), torch.from_numpy(centers).to(device))
        s = score_points(x, recon.cpu().numpy(), pipe.config.score, pipe.config.normal_k) * pipe.normalization.scale
        idx = ops.knn(pipe.reference, x, min(k, len(x))).idx
        total += s[idx].mean(1)
    return (total / len(frames)).astype(np.float32)


def fit_pipeline(clouds: list[np.ndarray], cfg: Config) -> tuple[Pipeline, list[np.ndarray]]:
    """Normalisation and ICP reference from the normal scans; returns the pipeline and the scans in its frame."""
    norm = ops.Normalization.fit(clouds)
    first = norm.apply(clouds[0], ops.bbox_center(clouds[0]))  # no reference yet: centred and scaled only
    pipe = Pipeline(cfg, norm, first[ops.farthest_point_sample(first, min(REF_POINTS, len(first)))])
    return pipe, [pipe.thin(pipe.to_model_frame(c)) for c in clouds]


PRETRAINED = {"cpu": Path(__file__).with_name("pretrained") / "dusnet_cpu.pt"}  # preset -> shipped weights


def train(clouds: list[np.ndarray], out: Path, opts: TrainOptions, setting: Preset | None = None) -> str:
    """Train on normal clouds (sensor units) and write the run directory ``out``; returns its model hash.

    ``setting`` replaces the preset named in ``opts`` (the ablation benchmark trains variants this way). Without an
    ``opts.init``, a preset with shipped pre-trained weights starts from them (``opts.pretrained=False``: from
    scratch).
    """
    if not clouds:
        raise ValueError("dusnet: no training clouds")
    clouds = [np.asarray(c, dtype=np.float32) for c in clouds]
    setting = setting or preset(opts.preset)
    t0, c0 = time.time(), time.process_time()  # wall and CPU time (the CPU time is the budget on a shared host)
    pipe, frames = fit_pipeline(clouds, setting.pipeline)
    shipped = PRETRAINED.get(opts.preset)
    if opts.init is None and opts.pretrained and shipped and setting.arch == preset(opts.preset).arch:
        opts = replace(opts, init=shipped)
    model, info = fit_network(pipe, frames, Path(out), opts, setting)
    pipe = Pipeline(setting.pipeline, pipe.normalization, pipe.reference, fit_baseline(pipe, model, frames))
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, Path(out) / WEIGHTS)
    meta, arrays = pipe.state()
    info.update(n_clouds=len(clouds), time_s=round(time.time() - t0, 1), cpu_s=round(time.process_time() - c0, 1))
    return write_run(out, kind=Kind.DUSNET.value, pipeline=meta, arrays=arrays, arch=setting.arch.to_dict(),
                     train=info, files=(WEIGHTS,))


def fit_network(pipe: Pipeline, frames: list[np.ndarray], out: Path, opts: TrainOptions,
                setting: Preset) -> tuple[DusNet, dict]:
    """The two training stages on augmented samples of ``frames`` (normalised clouds), grouped as ``pipe`` groups;
    checkpoints and the training log go to ``out``. Returns the model (on ``opts.device``) and the training record."""
    tc = setting.train
    if opts.steps is not None:
        tc = replace(tc, steps_down=opts.steps, steps_up=opts.steps)
    if not setting.arch.down_net:
        tc = replace(tc, steps_down=0)
    rng, gen = seeded(opts.seed)
    device = torch.device(opts.device)
    t0, c0 = time.time(), time.process_time()
    pool = make_pool(pipe, frames, tc.pool, rng)
    model = DusNet(setting.arch, setting.pipeline.groups)
    if opts.init is not None:
        try:
            model.load_state_dict(load_init(opts.init))
        except RuntimeError as exc:  # another architecture: say so in one line
            raise ValueError(f"{opts.init}: its weights do not fit the {opts.preset!r} preset's network "
                             f"({str(exc).splitlines()[1].strip()}); pre-train with the same --preset") from None
    stages = [("down", tc.steps_down, model.down), ("up", tc.steps_up, model.up)]
    stage_i, first = 0, 0  # where optimisation starts: the stage, and the step within it
    ck = load_checkpoint(out, model, rng, gen) if opts.resume else None
    if ck is not None:
        stage_i, first = ck["stage"], ck["step"]
    model.to(device)
    optimizer = torch.optim.Adam(stages[min(stage_i, 1)][2].parameters(), lr=tc.lr)
    if ck is not None:
        optimizer.load_state_dict(ck["optimizer"])
    offsets = [0, tc.steps_down]  # the log counts steps over both stages
    log = TrainLog(out, offsets[min(stage_i, 1)] + first if ck is not None else None)

    pool = {k: v.to(device) for k, v in pool.items()}
    h = 0.0
    done = {"down": tc.steps_down if stage_i else first, "up": first if stage_i else 0}  # steps run per stage

    def checkpoint(stage: int, step: int) -> None:  # the optimizer of the stage running when it is called
        save_checkpoint(out, model, optimizer, stage=stage, step=step, rng=rng, gen=gen)

    stage_steps = {f"{name}-net": total for name, total, _ in stages}
    with TrainLoop("dusnet", stage_steps, out, opts, checkpoint, (stage_i, first)) as loop:
        while stage_i < len(stages):
            name, total, net = stages[stage_i]
            if name == "up":
                model.down.eval().requires_grad_(False)
                with torch.no_grad():  # the frozen Down-Net's noise-free centres, as at inference
                    pred_centers = torch.cat([model.centers(pool["patches"][i: i + 8], pool["centers"][i: i + 8])
                                              for i in range(0, tc.pool, 8)])
                h = spacing(pool["centers"], setting.arch.gamma)
            for step in loop.steps(stage_i, first):
                done[name] = step + 1
                sel = torch.randint(tc.pool, (tc.batch,), generator=gen)
                batch = {k: v[sel] for k, v in pool.items()}
                if name == "down":
                    losses = down_losses(model, batch, tc, gen)
                else:
                    losses = up_losses(model, pred_centers[sel], batch, tc, setting.arch.gamma, h)
                set_lr(optimizer, cosine_lr(step, total, tc.lr))
                optimizer.zero_grad(set_to_none=True)
                losses["loss"].backward()
                optimizer.step()
                vals = {k: round(v.item(), 6) for k, v in losses.items()}
                loop.postfix(loss=vals["loss"])
                if step % 10 == 0 or step == total - 1:
                    log.write({"stage": name, "step": offsets[stage_i] + step + 1, **vals,
                               "time_s": round(time.time() - t0, 2), "cpu_s": round(time.process_time() - c0, 2)})
                if (step + 1) % CKPT_EVERY == 0:
                    checkpoint(stage_i, step + 1)
            stage_i, first = stage_i + 1, 0
            if stage_i < len(stages):
                optimizer = torch.optim.Adam(stages[stage_i][2].parameters(), lr=tc.lr)
            checkpoint(stage_i, 0)
    log.close()
    info = {"preset": opts.preset, "seed": opts.seed, "device": str(device), "steps_down": done["down"],
            "steps_up": done["up"], "planned_steps": [tc.steps_down, tc.steps_up], "time_budget": opts.time_budget,
            "repulsion_h": h, "init": str(opts.init) if opts.init else None, "config": asdict(tc)}
    return model, info
