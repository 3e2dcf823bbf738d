"""Pre-training (DUS-Net section 4, "Experimental Details"): the networks learn their generic tasks on many shapes
before they meet one category.

The paper pre-trains DUS-Net's Down-Net on ShapeNetPart (as Point-MAE) and its Up-Net on Visionair meshes (as
PU-Net). Neither can be had here; the method does not depend on those shapes, so any folder of shapes serves: a
plant's CAD library (meshes ``.obj``/``.stl``/``.ply``, sampled uniformly by area) or point clouds, and out of the
box the procedural corpus of ``edgead synth --corpus N``. Training runs exactly as per category (each kind's
``fit_network``: same losses, Noise-Gen or Patch-Gen, schedule), on every shape normalised by its own size. R3D-AD
(encoder and denoiser together) is pre-trained the same way. The result is a checkpoint for ``edgead train KIND
--init CKPT``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from edgead import ops
from edgead.detectors import Kind
from edgead.detectors.dusnet import Pipeline
from edgead.formats.mesh import MESH_SUFFIXES, read_mesh, sample_surface
from edgead.formats.pointcloud import SUFFIXES, PointCloudError, read_points
from edgead.train import dusnet, r3dad
from edgead.train.common import TrainOptions

MAX_POOL = 2048  # augmented samples kept in memory: one per shape up to this many (cpu preset: ~100 KB each)


def load_shapes(folder: Path, n_points: int = 20_000, seed: int = 0) -> list[np.ndarray]:
    """Every shape in ``folder`` as an (N, 3) float32 cloud: meshes sampled with ``n_points`` points, point clouds
    as they are (non-finite rows dropped). Unreadable files are skipped with a warning naming them."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in set(SUFFIXES) | set(MESH_SUFFIXES)) \
        if folder.is_dir() else []
    if not files:
        raise ValueError(f"{folder}: no shapes (meshes {', '.join(MESH_SUFFIXES)} or point clouds)")
    rng = np.random.default_rng(seed)
    shapes = []
    for f in files:
        try:
            shapes.append(read_shape(f, n_points, rng))
        except (PointCloudError, ValueError) as exc:
            print(f"edgead pretrain: skipping {f.name}: {exc}", file=sys.stderr)
    if not shapes:
        raise ValueError(f"{folder}: none of its {len(files)} files could be read")
    return shapes


def read_shape(path: Path, n_points: int, rng: np.random.Generator) -> np.ndarray:
    """A mesh sampled to ``n_points`` points, or a point cloud's finite points; a ``.ply`` is a mesh if it has
    faces. -> (N, 3) float32."""
    if path.suffix.lower() in MESH_SUFFIXES:
        try:
            return sample_surface(*read_mesh(path), n_points, rng)
        except PointCloudError:
            if path.suffix.lower() != ".ply":
                raise
    pts = read_points(path)
    pts = pts[np.isfinite(pts).all(1)]
    if len(pts) < 64:
        raise ValueError(f"{len(pts)} finite points, too few to pre-train on")
    return pts


def normalised(shapes: list[np.ndarray]) -> list[np.ndarray]:
    """Every shape centred and scaled by its own size: the networks learn shapes, not sizes."""
    out = []
    for s in shapes:
        s = np.asarray(s, dtype=np.float32)
        out.append(ops.Normalization.fit([s]).apply(s, ops.bbox_center(s)))
    return out


def dusnet_network(frames: list[np.ndarray], work: Path, opts: TrainOptions):
    """DUS-Net's two stages on the corpus: one augmented sample per shape (up to MAX_POOL) in the pool."""
    setting = dusnet.preset(opts.preset)
    grouping = Pipeline(setting.pipeline, ops.Normalization(1.0),  # grouping only: frames are normalised already
                        frames[0][ops.farthest_point_sample(frames[0], min(dusnet.REF_POINTS, len(frames[0])))])
    frames = [grouping.thin(f) for f in frames]
    setting = replace(setting, train=replace(setting.train, pool=min(max(setting.train.pool, len(frames)), MAX_POOL)))
    model, info = dusnet.fit_network(grouping, frames, work, opts, setting)
    return model, info, setting


def r3dad_network(frames: list[np.ndarray], work: Path, opts: TrainOptions):
    """R3D-AD on Patch-Gen pairs of FPS views of the corpus: at least one view per shape."""
    setting = r3dad.preset(opts.preset)
    rng = np.random.default_rng(opts.seed)
    views = r3dad.view_pool(frames, setting.pipeline.num_points, max(1, setting.train.views // len(frames)), rng)
    model, info = r3dad.fit_network(views, work, opts, setting)
    return model, info, setting


PRETRAINERS = {Kind.DUSNET: dusnet_network, Kind.R3DAD: r3dad_network}


def pretrain(kind: str | Kind, shapes: list[np.ndarray], out: Path, opts: TrainOptions) -> dict:
    """Pre-train ``kind``'s networks on ``shapes`` (any units and sizes) and write the checkpoint ``out`` (a
    ``.pt``); checkpoints for ``--resume`` and the training log go to ``<out stem>.work/`` beside it. Returns the
    record stored with the checkpoint."""
    kind = Kind.parse(kind)
    out = Path(out)
    t0 = time.time()
    model, info, setting = PRETRAINERS[kind](normalised(shapes), out.with_name(out.stem + ".work"), opts)
    record = {**info, "shapes": len(shapes), "time_s": round(time.time() - t0, 1)}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "kind": kind.value,
                "arch": setting.arch.to_dict(), "pretrain": record}, out)
    return record
