"""What every trainer shares: options, seeding, checkpoints and resuming, the training log, the LR schedule,
fine-tuning from a checkpoint, and the optimisation loop's bookkeeping (:class:`TrainLoop`: one progress bar over
the whole run, the time budget, Ctrl-C)."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from edgead.formats.rundir import CHECKPOINTS, TRAIN_LOG

log = logging.getLogger(__name__)

CHECKPOINT = f"{CHECKPOINTS}/last.pt"


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
    init: Path | None = None  # fine-tune from a (pre-trained) checkpoint or weights file ...
    pretrained: bool = True  # ... else from the weights shipped for the preset, if any (False: from scratch)
    steps: int | None = None  # override the preset's number of optimisation steps (per stage)
    progress: bool = True
    time_budget: float | None = None  # seconds of optimisation at most (stages share it by their step counts)


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


def checkpoint_path(out: Path) -> Path:
    """``out``'s checkpoint, which ``--resume`` needs: its absence is an error, not a silent fresh start."""
    path = Path(out) / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint to continue from ({path}); train without --resume")
    return path


def load_checkpoint(out: Path, model, rng: np.random.Generator, gen) -> dict:
    """Restore the model and both generators from ``out``'s checkpoint (``--resume``); returns it (for the
    optimizer state, stage and step)."""
    path = checkpoint_path(out)
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
        self.path = Path(out) / TRAIN_LOG
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


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training, raised once a checkpoint of the last complete step is saved (``--resume`` goes on
    from there). The message says which step and where the checkpoint is."""


def busy_note() -> str | None:
    """Why training may run slower than measured: other work on the CPUs (load average above the core count)."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load <= cores:
        return None
    return (f"load average {load:.1f} on {cores} cores: other work shares the CPUs, so steps run slower than the "
            "measured times (docs/training.md) and the ETA says so")


class TrainLoop:
    """The bookkeeping of a trainer's optimisation loop.

    One progress bar counts every step of every stage, so its ETA covers the whole run rather than one stage.
    Each stage gets its share of ``--time-budget`` (by step count), counted from when its first step can run.
    Ctrl-C stops at the end of the step in progress: the loop saves a checkpoint there and raises
    :class:`Interrupted` (a second Ctrl-C stops at once, without one). Use as a context manager.
    """

    def __init__(self, desc: str, stages: dict[str, int], out: Path, opts: TrainOptions,
                 checkpoint: Callable[[int, int], None], start: tuple[int, int] = (0, 0)):
        """``stages``: name -> steps, in order; ``checkpoint(stage, step)`` saves the state after ``step`` steps of
        ``stage``; ``start``: (stage, step) a resumed run starts at."""
        self.desc, self.stages, self.opts, self.save = desc, list(stages.items()), opts, checkpoint
        self.checkpoint = Path(out) / CHECKPOINT
        self.total = sum(stages.values())
        done = self.done(*start)
        self.bar = tqdm(total=self.total, initial=min(done, self.total), desc=desc, unit="step",
                        disable=not opts.progress, dynamic_ncols=True)
        self.stop_requested = False
        self._handler: tuple | None = None  # (the SIGINT handler replaced while the loop runs,)
        if start != (0, 0):
            stage = self.stages[min(start[0], len(self.stages) - 1)][0]
            self.note(f"resumed from {self.checkpoint} at step {done} of {self.total} ({stage} step {start[1]})")
        if (busy := busy_note()) is not None:
            self.note(busy)

    def __enter__(self) -> TrainLoop:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._handler = (signal.signal(signal.SIGINT, self._interrupt),)
        return self

    def __exit__(self, *exc) -> None:
        if self._handler is not None:
            signal.signal(signal.SIGINT, self._handler[0])
        self.bar.close()

    def done(self, stage: int, step: int) -> int:
        """Steps of the whole run done at ``step`` of ``stage``."""
        return sum(n for _, n in self.stages[:stage]) + step

    def _interrupt(self, signum, frame) -> None:
        if self.stop_requested:
            raise KeyboardInterrupt
        self.stop_requested = True

    def note(self, message: str) -> None:
        """A line for the person watching: on stderr above the bar, or logged (``-v``) with progress off."""
        if self.opts.progress:
            tqdm.write(f"{self.desc}: {message}", file=sys.stderr)
        else:
            log.info("%s: %s", self.desc, message)

    def steps(self, stage: int, start: int) -> Iterator[int]:
        """The steps ``start, start + 1, ...`` of ``stage`` (an index into the stages), until the stage is done or
        its share of the time budget is spent. On Ctrl-C the steps done so far are saved and :class:`Interrupted`
        is raised."""
        name, total = self.stages[stage]
        deadline = time.monotonic() + self.opts.time_budget * total / max(self.total, 1) if self.opts.time_budget \
            else math.inf
        self.bar.set_description(f"{self.desc} {name}" if len(self.stages) > 1 else self.desc)
        for step in range(start, total):
            if self.stop_requested:
                self.save(stage, step)
                raise Interrupted(f"at step {self.done(stage, step)} of {self.total} ({name} step {step} of "
                                  f"{total}); checkpoint saved to {self.checkpoint}")
            if time.monotonic() > deadline:
                return
            yield step
            self.bar.update()

    def postfix(self, **values) -> None:
        self.bar.set_postfix(values, refresh=False)
