"""Engine manifests: ``NAME.json`` beside ``NAME.onnx`` / ``NAME.plan``, written by ``edgead export``.

The manifest is the only description of an engine an edge box gets: the pipeline state's metadata (the arrays are
``NAME.npz``), tensor names/shapes/dtypes, precision, library versions, GPU architecture for plans, the sha256 of
every file and the parity figures measured at export. Backends load nothing whose hash does not match. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

FORMAT = "edgead-engine/1"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest_path(engine: Path) -> Path:
    """``engines/NAME.onnx`` (or ``NAME.plan``, ``NAME.fp16.onnx``) -> ``engines/NAME.json``."""
    engine = Path(engine)
    return engine.with_name(engine.name.split(".")[0] + ".json")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``path`` and rename it: readers never see a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_manifest(path: Path, doc: dict) -> None:
    atomic_write(Path(path), (json.dumps({"format": FORMAT, **doc}, indent=2) + "\n").encode())


def verify_file(manifest: dict, path: Path) -> None:
    """Raise ValueError unless ``path`` is listed in the manifest with its current sha256."""
    path = Path(path)
    expected = manifest.get("files", {}).get(path.name)
    if expected is None:
        raise ValueError(f"{path}: not listed in its manifest; re-run `edgead export`")
    if not path.exists():
        raise FileNotFoundError(f"{path}: listed in the manifest but missing")
    actual = sha256(path)
    if actual != expected:
        raise ValueError(f"{path}: sha256 {actual[:16]}... does not match the manifest's {expected[:16]}...; "
                         "the file was modified or belongs to another export, refusing to load it")


def read_manifest(engine: Path) -> dict:
    """The manifest of ``engine``, after checking the engine's and the pipeline arrays' hashes."""
    path = manifest_path(engine)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{engine}: no manifest {path.name} beside it; engines come with their manifest") \
            from exc
    except ValueError as exc:
        raise ValueError(f"{path}: not a JSON manifest ({exc})") from exc
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path}: not an edgead engine manifest (format {doc.get('format')!r}, expected {FORMAT})")
    verify_file(doc, Path(engine))
    verify_file(doc, path.with_suffix(".npz"))
    return doc


def load_engine_pipeline(engine: Path):
    """(pipeline, manifest) of an engine: the torch-free pipeline rebuilt from the verified ``NAME.npz``."""
    import numpy as np

    from edgead.detectors import build_pipeline

    doc = read_manifest(engine)
    with np.load(manifest_path(engine).with_suffix(".npz"), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return build_pipeline(doc["pipeline"], arrays), doc
