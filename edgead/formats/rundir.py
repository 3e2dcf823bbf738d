"""Run directories: what ``edgead train`` writes and ``EdgeDetector.load(RUN_DIR)`` reads. The one owner of their
layout and of the model hash.

::

    RUN_DIR/model.json     format, kind, name, pipeline state (JSON), network architecture, training record,
                           the sha256 of every file below, and model_hash (see edgead.formats.digest)
    RUN_DIR/pipeline.npz   the pipeline's arrays (reference clouds, normals)
    RUN_DIR/weights.pt     network weights (not for ``template``)
    RUN_DIR/checkpoints/   training checkpoints for ``--resume`` (not part of the model)
    RUN_DIR/train_log.jsonl  the training log (not part of the model)

A new run goes into a missing or empty directory (:func:`prepare_output`): a run's files beside someone else's
are how stale notes, weights or checkpoints end up passing for part of the model.

``read_run`` checks the format version, every listed file's sha256 and the model hash before anything is used: a
re-saved array, an edited field or swapped weights are refused with an error naming what does not match.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np

from edgead.formats.digest import (
    Verified,
    atomic_write,
    hashed,
    read_json,
    sha256_file,
    verify_file,
    verify_hash,
    write_json,
)

FORMAT = "edgead-run/2"
MODEL_JSON, PIPELINE_NPZ, WEIGHTS = "model.json", "pipeline.npz", "weights.pt"
CHECKPOINTS, TRAIN_LOG = "checkpoints", "train_log.jsonl"
RUN_FILES = (MODEL_JSON, PIPELINE_NPZ, WEIGHTS, CHECKPOINTS, TRAIN_LOG)


class Run(Verified):
    """A verified run directory (``path`` is the directory)."""

    @property
    def pipeline(self) -> dict:
        return self.doc["pipeline"]

    @property
    def arch(self) -> dict | None:
        return self.doc.get("arch")

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS


def is_run_dir(path: Path) -> bool:
    return (Path(path) / MODEL_JSON).is_file()


def prepare_output(out: Path, *, resume: bool = False, force: bool = False) -> list[str]:
    """Make ``out`` ready for a training run and return the names of files in it that are not a run's (kept).

    A new run needs ``out`` missing or empty. ``force`` removes a previous run's files (``RUN_FILES``) and keeps
    anything else; ``resume`` continues the run already there. Raises FileExistsError otherwise, naming what is in
    the way.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a directory")
    present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    foreign = [name for name in present if name not in RUN_FILES]
    if resume:
        return foreign
    if present and not force:
        shown = ", ".join(present[:5]) + (f" and {len(present) - 5} more" if len(present) > 5 else "")
        raise FileExistsError(f"{out} is not empty ({shown}): train into a new directory, continue the run there with "
                              "--resume, or replace it with --force")
    for name in set(present) & set(RUN_FILES):
        if (out / name).is_dir():
            shutil.rmtree(out / name)
        else:
            (out / name).unlink()
    out.mkdir(parents=True, exist_ok=True)
    return foreign


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # grids are mostly empty cells: 4x smaller
    atomic_write(path, buf.getvalue())


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_run(out: Path, *, kind: str, pipeline: dict, arrays: dict[str, np.ndarray], name: str = "",
              arch: dict | None = None, train: dict | None = None, files: tuple[str, ...] = ()) -> str:
    """Write ``model.json`` and ``pipeline.npz`` into ``out``; ``files`` already there (the weights) are hashed in.
    ``model.json`` goes last, so a failed write leaves no run directory that loads. Returns the model hash."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_arrays(out / PIPELINE_NPZ, arrays)
    listed = {f: sha256_file(out / f) for f in (PIPELINE_NPZ, *files)}
    doc = hashed({"format": FORMAT, "kind": kind, "name": name or kind, "pipeline": pipeline, "arch": arch,
                  "train": train or {}, "files": listed})
    write_json(out / MODEL_JSON, doc)
    return doc["model_hash"]


def read_run(path: Path) -> Run:
    """The verified run directory at ``path``. Raises FileNotFoundError or ValueError naming the problem."""
    path = Path(path)
    if not is_run_dir(path):
        raise FileNotFoundError(f"{path}: no {MODEL_JSON}; not a run directory written by `edgead train`")
    doc = read_json(path / MODEL_JSON, "run description")
    if doc.get("format") != FORMAT:
        found = doc.get("format", "edgead-run/1 (no format field)")
        raise ValueError(f"{path}: run directory format {found!r}; this edgead reads {FORMAT!r} (run directories "
                         "from before the content hash cannot be verified): train it again")
    verify_hash(doc, path / MODEL_JSON)
    for name in doc.get("files", {}):
        verify_file(doc, path / name)
    if PIPELINE_NPZ not in doc["files"]:
        raise ValueError(f"{path}: {MODEL_JSON} lists no {PIPELINE_NPZ}")
    return Run(path, doc, load_arrays(path / PIPELINE_NPZ))
