"""Content hashes and atomic writes shared by the run-directory, engine and threshold formats."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_hash(doc: dict) -> str:
    """sha256 of a document's canonical JSON, its own ``model_hash`` left out. The document lists its files'
    sha256 under ``files``, so the hash covers every field and every file that affects a result."""
    body = {k: v for k, v in doc.items() if k != "model_hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()).hexdigest()


def hashed(doc: dict) -> dict:
    """``doc`` with its ``model_hash`` set."""
    return {**doc, "model_hash": content_hash(doc)}


def verify_hash(doc: dict, where: Path) -> None:
    """Raise ValueError unless ``doc`` carries its own content hash (no field was changed after it was written)."""
    actual, stored = content_hash(doc), doc.get("model_hash")
    if actual != stored:
        raise ValueError(f"{where}: its content hash {actual[:16]}... does not match the model_hash it records "
                         f"({str(stored)[:16]}...); a field was edited after it was written, refusing to load it")


def verify_file(doc: dict, path: Path) -> None:
    """Raise unless ``path`` is listed in ``doc["files"]`` with its current sha256."""
    expected = doc.get("files", {}).get(path.name)
    if expected is None:
        raise ValueError(f"{path}: not listed among the files of its description; refusing to load it")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: listed in its description but missing")
    actual = sha256_file(path)
    if actual != expected:
        raise ValueError(f"{path}: sha256 {actual[:16]}... does not match the recorded {expected[:16]}...; the file "
                         "was modified or belongs to another model, refusing to load it")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``path`` and rename it: readers never see a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json(path: Path, doc: dict) -> None:
    atomic_write(path, (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode())


def read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``; errors say what the file was supposed to be."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable {what} ({exc})") from exc
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a {what} (a JSON object was expected)")
    return doc


@dataclass(frozen=True)
class Verified:
    """A model description read and checked against its hashes: the file it describes, the document, its arrays."""

    path: Path
    doc: dict
    arrays: dict[str, np.ndarray]

    @property
    def kind(self) -> str:
        return self.doc["kind"]

    @property
    def name(self) -> str:
        return self.doc.get("name") or self.kind

    @property
    def model_hash(self) -> str:
        return self.doc["model_hash"]
