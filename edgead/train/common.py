"""What every trainer shares: options, seeding, checkpoints and resuming, the training log, the LR schedule and
fine-tuning from a checkpoint."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT = "checkpoints/last.pt"
LOG = "train_log.jsonl"


@dataclass(frozen=True)
class Preset:
    """A complete setting of a detector with a network: its pipeline configuration, the network's architecture and
    its training configuration (each kind's own dataclasses)."""

    pipeline: Any
    arch: Any
    train: Any


def choose(presets: dict[str, Preset], name: str, kind: str) -> Preset:
    if name not in presets:
        raise ValueError(f"unknown {kind} preset {name!r}; expected one of {', '.join(presets)}")
    return presets[name]


@dataclass
class TrainOptions:
    preset: str = "cpu"  # "cpu" (default: one category in <= 10 min on 2 cores), "paper", ... (each trainer's PRESETS)
    seed: int = 0
    device: str = "cpu"
    resume: bool = False  # continue from RUN_DIR/checkpoints/last.pt
    init: Path | None = None  # fine-tune from a (pre-trained) checkpoint or weights file
    steps: int | None = None  # override the preset's number of optimisation steps (per stage)
    progress: bool = True
    time_budget: float | None = None  # seconds of optimisation at most (stages share it by their step counts)


def stage_deadline(opts: TrainOptions, share: float) -> float:
    """``time.monotonic()`` value at which a stage given ``share`` of the time budget stops (inf: no budget)."""
    return time.monotonic() + opts.time_budget * share if opts.time_budget else math.inf


def cosine_lr(step: int, total: int, base: float) -> float:
    """Cosine decay from ``base`` to 0 over ``total`` steps: a pure function of the step, so resuming is exact."""
    return base * 0.5 * (1 + math.cos(math.pi * step / max(total, 1)))


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def seeded(seed: int):
    """(numpy Generator, torch Generator) from one seed, with torch's global seed set too."""
    torch.manual_seed(seed)
    return np.random.default_rng(seed), torch.Generator().manual_seed(seed)


def save_checkpoint(out: Path, model, optimizer, *, stage: int, step: int, rng: np.random.Generator, gen) -> None:
    """Everything ``--resume`` needs to continue exactly: weights, optimizer, position, both generators."""
    path = Path(out) / CHECKPOINT
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "stage": stage, "step": step,
                "numpy_rng": rng.bit_generator.state, "torch_rng": gen.get_state()}, path)


def load_checkpoint(out: Path, model, rng: np.random.Generator, gen) -> dict | None:
    """Restore the model and both generators from ``out``'s checkpoint; returns it (for the optimizer state,
    stage and step), or None when there is none."""
    path = Path(out) / CHECKPOINT
    if not path.exists():
        return None
    ck = torch.load(path, map_location="cpu", weights_only=False)  # the numpy generator state is a plain dict
    model.load_state_dict(ck["model"])
    rng.bit_generator.state = ck["numpy_rng"]
    gen.set_state(ck["torch_rng"])
    return ck


def load_init(path: Path) -> dict:
    """A state dict from a checkpoint (``{"model": ...}``) or a run's ``weights.pt``."""
    obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    return obj["model"] if "model" in obj else obj


class TrainLog:
    """``train_log.jsonl``: one JSON record per logged step. A resumed run keeps the records up to its step."""

    def __init__(self, out: Path, resume_step: int | None = None, step_key: str = "step"):
        self.path = Path(out) / LOG
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = self.path.read_text().splitlines() if resume_step is not None and self.path.exists() else []
        keep = [x for x in lines if json.loads(x).get(step_key, 0) <= (resume_step or 0)]
        self.path.write_text("".join(f"{x}\n" for x in keep))
        self.file = self.path.open("a")

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()
