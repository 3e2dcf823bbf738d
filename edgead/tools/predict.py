"""``edgead predict MODEL INPUTS... --out DIR``: score a batch of scans offline, as a line engineer checks a folder of
parts before (or beside) running the service.

Inputs are point-cloud files in any format :mod:`edgead.formats.pointcloud` reads, or folders of them (the files
directly inside, sorted). Each scan becomes one row of ``results.csv`` and one line of ``results.jsonl``, written
as it is judged (an interrupted batch keeps its rows); ``--images`` adds ``images/<scan>.png``. The rows follow
``serve``'s rules: a scan the detector cannot judge (too few points, too little of the part seen:
:class:`~edgead.detectors.NotInspected`) is status ``not inspected`` and a file that cannot be read is status
``error``; neither has a score or a decision, so neither can read as a pass. Regions are found for anomalous scans
only, as ``serve`` does.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edgead.detectors import NotInspected
from edgead.formats.dataset import scan_files
from edgead.formats.pointcloud import SUFFIXES, read_points
from edgead.formats.scene import Scene, crop
from edgead.stream.regions import anomalous_regions
from edgead.tools import figures

CSV_FIELDS = ("file", "score", "anomalous", "status", "n_points", "n_regions", "model_hash", "error")
RESULTS_CSV, RESULTS_JSONL, IMAGES = "results.csv", "results.jsonl", "images"
OK, NOT_INSPECTED, ERROR = "ok", "not inspected", "error"


@dataclass
class Summary:
    """What a batch came to: counts per outcome, and the files written."""

    n: int = 0
    anomalous: int = 0
    passed: int = 0
    undecided: int = 0  # scored without a threshold
    not_inspected: int = 0
    errors: int = 0
    images: list[Path] = field(default_factory=list)

    @property
    def all_judged(self) -> bool:
        """Every scan was inspected and scored (the exit status 0 of ``edgead predict``)."""
        return self.not_inspected == 0 and self.errors == 0

    def line(self) -> str:
        parts = [f"{self.anomalous} anomalous", f"{self.passed} passed"]
        parts += [f"{self.undecided} scored without a threshold"] if self.undecided else []
        parts += [f"{self.not_inspected} not inspected"] if self.not_inspected else []
        parts += [f"{self.errors} unreadable"] if self.errors else []
        return f"{self.n} scans: " + ", ".join(parts)


def collect_inputs(inputs: list[Path]) -> list[Path]:
    """The scans named by ``inputs``: files as given, and the point-cloud files directly inside folders (sorted);
    each once. Raises for a missing path, a file type no reader takes, or a folder without scans."""
    files: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            found = scan_files(p)
            if not found:
                raise ValueError(f"{p}: no point-cloud files ({', '.join(SUFFIXES)}) directly inside (a category "
                                 "directory keeps its scans in test/)")
            files += found
        elif not p.exists():
            raise FileNotFoundError(f"{p}: no such file or directory")
        elif p.suffix.lower() not in SUFFIXES:
            raise ValueError(f"{p}: not a point-cloud file ({', '.join(SUFFIXES)})")
        else:
            files.append(p)
    return list(dict.fromkeys(files))


def prepare_out(out: Path, force: bool) -> None:
    """``out`` created; results of an earlier batch there are refused, or removed with ``force``."""
    out = Path(out)
    old = [out / n for n in (RESULTS_CSV, RESULTS_JSONL, IMAGES) if (out / n).exists()]
    if old and not force:
        raise FileExistsError(f"{out} holds the results of an earlier batch ({', '.join(p.name for p in old)}): use "
                              "another --out, or --force to replace them")
    for p in old:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def image_names(files: list[Path]) -> list[str]:
    """A distinct image name per scan: its stem; its file name where stems repeat (``a.ply``, ``a.csv``); with its
    position in the batch where even those repeat (same names in different folders)."""
    stems = [f.stem for f in files]
    names = [f.name if stems.count(f.stem) > 1 else f.stem for f in files]
    return [f"{n}-{i}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def judge(detector, path: Path, scene: Scene | None) -> tuple[dict, np.ndarray | None, np.ndarray | None]:
    """One scan -> (its JSON record, its points and point scores for the image, or None when it was not scored)."""
    record = {"file": str(path), "status": OK, "error": "", "score": None, "threshold": detector.threshold,
              "anomalous": None, "passed": False, "n_points": 0, "n_dropped": 0, "regions": [],
              "model_name": detector.name, "model_hash": detector.model_hash, "backend": str(detector.backend)}
    try:
        points = read_points(path)
        points = crop(points, scene) if scene is not None else points
        record["n_points"] = len(points)
        res = detector.detect(points)
    except NotInspected as exc:
        return record | {"status": NOT_INSPECTED, "error": f"not inspected: {exc}"}, None, None
    except ValueError as exc:  # unreadable file (PointCloudError), unusable frame
        return record | {"status": ERROR, "error": str(exc)}, None, None
    regions = anomalous_regions(points, res.point_scores, res.threshold) if res.anomalous else []
    record |= {"score": res.score, "anomalous": res.anomalous, "passed": res.passed, "n_dropped": res.n_dropped,
               "coverage": float(res.coverage), "fitness": float(res.fitness), "regions": regions,
               "timings_ms": {k: round(v, 3) for k, v in res.timings_ms.items()}}
    return record, points, res.point_scores


def csv_row(record: dict) -> dict:
    """A JSON record's ``results.csv`` row: empty cells where there is no score or no decision."""
    decision = record["anomalous"]
    return {"file": record["file"], "score": "" if record["score"] is None else f"{record['score']:.6g}",
            "anomalous": "" if decision is None else str(decision).lower(), "status": record["status"],
            "n_points": record["n_points"], "n_regions": len(record["regions"]), "model_hash": record["model_hash"],
            "error": record["error"]}


def image_title(record: dict) -> str:
    name, score, t = Path(record["file"]).name, record["score"], record["threshold"]
    if record["anomalous"] is None:
        return f"{name}: score {score:.3g} (no threshold: not decided)"
    if record["anomalous"]:
        n = len(record["regions"])
        return f"{name}: ANOMALOUS, score {score:.3g} > threshold {t:.3g}, {n} region{'s' * (n != 1)}"
    return f"{name}: passed, score {score:.3g} <= threshold {t:.3g}"


def predict(detector, files: list[Path], out: Path, *, images: bool = False, scene: Scene | None = None,
            progress: bool = False) -> Summary:
    """Judge every file with ``detector`` into ``out`` (``results.csv``, ``results.jsonl``, ``images/``)."""
    out = Path(out)
    summary = Summary()
    names = image_names(files)
    if images:
        (out / IMAGES).mkdir(parents=True, exist_ok=True)
    with open(out / RESULTS_CSV, "w", newline="") as table, open(out / RESULTS_JSONL, "w") as lines:
        writer = csv.DictWriter(table, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for path, name in zip(tqdm(files, desc="predict", unit="scan", disable=not progress), names, strict=True):
            record, points, scores = judge(detector, path, scene)
            record["image"] = None
            if images and scores is not None:
                image = out / IMAGES / f"{name}.png"
                figures.save(figures.scan_figure(points, scores, detector.threshold, image_title(record),
                                                 record["regions"]), image)
                record["image"] = str(image)
                summary.images.append(image)
            writer.writerow(csv_row(record))
            lines.write(json.dumps(record) + "\n")
            table.flush()
            lines.flush()
            summary.n += 1
            summary.anomalous += record["anomalous"] is True
            summary.passed += record["passed"]
            summary.undecided += record["status"] == OK and record["anomalous"] is None
            summary.not_inspected += record["status"] == NOT_INSPECTED
            summary.errors += record["status"] == ERROR
    return summary
