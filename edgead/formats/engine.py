"""Engine manifests: ``NAME.json`` beside ``NAME.onnx`` / ``NAME.fp16.onnx`` / ``NAME.plan``, written by
``edgead export``.

The manifest is the only description of an engine an edge box gets: the detector kind, the pipeline state's
metadata (its arrays are ``NAME.npz``), tensor names/shapes/dtypes, precisions, library versions, the compiled
kernels and the GPU/driver they need, the parity figures measured at export, the sha256 of every file, and the
model hash over all of it (``edgead.formats.digest``). One export is one model hash, whichever of its engine files
a backend runs. ``read_engine`` verifies the manifest's own hash and the files the backend will use before anything
is deserialised.
"""

from __future__ import annotations

from pathlib import Path

from edgead.formats.digest import Verified, hashed, read_json, verify_file, verify_hash, write_json
from edgead.formats.rundir import load_arrays

FORMAT = "edgead-engine/2"


class Engine(Verified):
    """A verified engine: the file a backend runs (``path``), its manifest and the pipeline arrays."""

    @property
    def folder(self) -> Path:
        return self.path.parent


def manifest_path(engine: Path) -> Path:
    """``engines/NAME.onnx`` (or ``NAME.plan``, ``NAME.fp16.onnx``) -> ``engines/NAME.json``."""
    engine = Path(engine)
    return engine.with_name(engine.name.split(".")[0] + ".json")


def write_manifest(path: Path, doc: dict) -> dict:
    """Write the manifest (``doc`` lists every file's sha256 under ``files``) with its model hash; returns it."""
    doc = hashed({"format": FORMAT, **doc})
    write_json(Path(path), doc)
    return doc


def read_engine(engine: Path, also: tuple[str, ...] = ()) -> Engine:
    """The verified engine ``engine``: the manifest's hash, the engine file's, ``NAME.npz``'s and those of the
    files named in ``also`` (compiled kernels). Raises FileNotFoundError or ValueError naming the problem."""
    engine = Path(engine)
    path = manifest_path(engine)
    if not path.is_file():
        raise FileNotFoundError(f"{engine}: no manifest {path.name} beside it; engines come with their manifest")
    doc = read_json(path, "engine manifest")
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path}: engine manifest format {doc.get('format')!r}; this edgead reads {FORMAT!r}: "
                         "export the run again")
    verify_hash(doc, path)
    npz = path.with_suffix(".npz")
    for f in (engine, npz, *(path.parent / name for name in also)):
        verify_file(doc, f)
    return Engine(engine, doc, load_arrays(npz))
