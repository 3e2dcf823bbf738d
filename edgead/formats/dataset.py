"""Datasets on disk: Real3D-AD and Anomaly-ShapeNet category directories, or a plain folder of scans.

Layouts (one category directory each)::

    Real3D-AD (and ``edgead synth``)        Anomaly-ShapeNet (pcd release)
    <cat>/train/*template*.pcd               <cat>/train/*template*.pcd
    <cat>/test/*good*.pcd    (good)          <cat>/test/*positive*.pcd   (good)
    <cat>/test/<name>.pcd    (defective)     <cat>/test/<name>.pcd       (defective)
    <cat>/gt/<name>.txt      x y z label     <cat>/GT/<name>.txt         x,y,z,label

Test protocol (as the datasets' reference loaders): a test file whose name contains ``good`` (Real3D-AD) or
``positive`` (Anomaly-ShapeNet) is a good sample: its points come from the test file and every point is labelled 0.
Any other test file is defective (object label 1): its points *and* per-point labels come from the ground-truth
text file of the same name, which must exist. Real3D-AD test files whose name contains ``temp`` (templates copied
into test) are skipped, as the reference loader does.

A plain folder of scans (any format :mod:`edgead.formats.pointcloud` reads) is a training set only. Non-finite rows
are dropped everywhere (with their labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgead.formats.pointcloud import SUFFIXES, PointCloudError, read_labeled, read_points

__all__ = ["DatasetError", "TestSample", "detect_layout", "find_categories", "load_train", "load_test",
           "scan_files", "defect_labelled", "training_concerns", "LAYOUTS"]

LAYOUTS = ("real3d", "anomaly_shapenet", "folder")


class DatasetError(ValueError):
    """A dataset directory is missing, empty or not in a known layout. The message names the directory."""


@dataclass
class TestSample:
    __test__ = False  # not a pytest test class

    name: str  # file stem, e.g. "012_bulge"
    points: np.ndarray  # (N, 3) float32, finite
    labels: np.ndarray  # (N,) uint8, 1 = anomalous point
    label: int  # 0 good, 1 defective


def _entries(d: Path) -> dict[str, Path]:
    """Children of ``d`` by exact name (case-sensitive even on case-insensitive file systems)."""
    try:
        return {p.name: p for p in d.iterdir()}
    except OSError:
        return {}


def _cloud_files(d: Path) -> list[Path]:
    return sorted(p for p in _entries(d).values() if p.is_file() and p.suffix.lower() in SUFFIXES
                  and not p.name.startswith("."))


def _is_dir(entries: dict[str, Path], name: str) -> bool:
    return name in entries and entries[name].is_dir()


def detect_layout(directory) -> str:
    """``"real3d"``, ``"anomaly_shapenet"`` or ``"folder"`` for a category directory (or a folder of scans).

    Anomaly-ShapeNet is recognised by its upper-case ``GT`` folder or, without one, by ``positive`` test files;
    any other directory with ``train/`` or ``test/`` is Real3D-AD. Raises :class:`DatasetError` for a missing
    directory or one with neither splits nor point-cloud files.
    """
    d = Path(directory)
    if not d.is_dir():
        raise DatasetError(f"{d}: no such directory" if not d.exists() else f"{d}: not a directory")
    ent = _entries(d)
    if _is_dir(ent, "train") or _is_dir(ent, "test"):
        if _is_dir(ent, "GT") and not _is_dir(ent, "gt"):
            return "anomaly_shapenet"
        if not _is_dir(ent, "gt") and _is_dir(ent, "test"):
            if any("positive" in p.stem for p in _cloud_files(ent["test"])):
                return "anomaly_shapenet"
        return "real3d"
    if _cloud_files(d):
        return "folder"
    raise DatasetError(f"{d}: not a dataset directory: no train/ or test/ split and no point-cloud files "
                       f"({', '.join(SUFFIXES)})")


def _finite(points: np.ndarray, labels: np.ndarray | None = None):
    keep = np.isfinite(points).all(axis=1)
    if keep.all():
        return points, labels
    return points[keep], (labels[keep] if labels is not None else None)


def _read(path: Path) -> np.ndarray:
    pts, _ = _finite(read_points(path))
    if len(pts) == 0:
        raise DatasetError(f"{path}: no finite points")
    return pts


def load_train(directory) -> list[np.ndarray]:
    """Normal training scans of one category: a list of (N_i, 3) float32 arrays (NaN rows dropped).

    Real3D-AD / Anomaly-ShapeNet: ``train/*template*`` files (every point-cloud file in ``train/`` when none is
    named so); a plain folder: every point-cloud file in it, sorted by name.
    """
    d = Path(directory)
    layout = detect_layout(d)
    if layout == "folder":
        files = _cloud_files(d)
    else:
        train = d / "train"
        if not train.is_dir():
            raise DatasetError(f"{d}: no train/ directory ({layout} layout)")
        files = _cloud_files(train)
        templates = [f for f in files if "template" in f.stem]
        files = templates or files
        if not files:
            raise DatasetError(f"{train}: no training scans (expected *template*.pcd files)")
    return [_read(f) for f in files]


def load_test(directory) -> list[TestSample]:
    """Test samples of one category (Real3D-AD or Anomaly-ShapeNet layout), sorted by file name."""
    d = Path(directory)
    layout = detect_layout(d)
    if layout == "folder":
        raise DatasetError(f"{d}: a plain folder of scans has no test split (expected test/ and gt/ folders)")
    test = d / "test"
    if not test.is_dir():
        raise DatasetError(f"{d}: no test/ directory ({layout} layout)")
    if layout == "real3d":
        good_word, gt_dir = "good", d / "gt"
        files = [f for f in _cloud_files(test) if "temp" not in f.stem]
    else:
        good_word, gt_dir = "positive", d / "GT"
        files = [f for f in _cloud_files(test) if "template" not in f.stem]
    files = [f for f in files if f.suffix.lower() != ".txt"]  # test/ holds clouds; ground truth lives in gt/
    if not files:
        raise DatasetError(f"{test}: no test scans")
    samples = []
    for f in files:
        if good_word in f.stem:
            pts = _read(f)
            samples.append(TestSample(f.stem, pts, np.zeros(len(pts), np.uint8), 0))
            continue
        gt = gt_dir / f"{f.stem}.txt"
        if not gt.is_file():
            raise DatasetError(f"{f}: defective sample without ground truth (expected {gt}; good samples have "
                               f"'{good_word}' in their name)")
        pts, labels = read_labeled(gt)
        if labels is None:
            raise PointCloudError(gt, "ground truth needs four columns: x y z label")
        pts, labels = _finite(pts, labels)
        if len(pts) == 0:
            raise DatasetError(f"{gt}: no finite points")
        samples.append(TestSample(f.stem, pts, labels, 1))
    return samples


def find_categories(root) -> list[Path]:
    """Category directories under ``root`` (sorted); ``[root]`` when ``root`` is itself a category."""
    r = Path(root)
    if not r.is_dir():
        raise DatasetError(f"{r}: no such directory" if not r.exists() else f"{r}: not a directory")
    ent = _entries(r)
    if _is_dir(ent, "train") or _is_dir(ent, "test"):
        return [r]
    cats = sorted(p for p in ent.values() if p.is_dir() and (_is_dir(_entries(p), "train")
                                                             or _is_dir(_entries(p), "test")))
    if not cats:
        raise DatasetError(f"{r}: no categories (sub-directories with train/ or test/) and not a category itself")
    return cats


def scan_files(directory) -> list[Path]:
    """The point-cloud files directly inside ``directory``, sorted by name (hidden files left out)."""
    return _cloud_files(Path(directory))


def defect_labelled(files) -> list[Path]:
    """The files among ``files`` whose per-point labels mark anomalous points (a ground-truth file, a labelled
    defective scan): they are not normal scans, whatever their folder says."""
    bad = []
    for f in files:
        _, labels = read_labeled(f)
        if labels is not None and labels.any():
            bad.append(Path(f))
    return bad


def training_concerns(directory) -> list[str]:
    """Why the scans :func:`load_train` takes from ``directory`` may not all be normal parts, one sentence each
    (empty when nothing looks wrong): a plain folder named like a test split or ground truth, files whose point
    labels mark defects. A category directory trains on its ``train/`` split and raises no concern."""
    d = Path(directory)
    if detect_layout(d) != "folder":
        return []
    concerns = []
    if d.name.lower() in ("test", "gt"):
        concerns.append(f"{d} is named like a {'test split' if d.name.lower() == 'test' else 'ground-truth folder'}"
                        f": such folders hold defective parts; train on the category directory ({d.parent}), which "
                        "uses its train/ scans")
    bad = defect_labelled(_cloud_files(d))
    if bad:
        names = ", ".join(f.name for f in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        concerns.append(f"{len(bad)} of the scans in {d} label points as anomalous ({names}): a detector trained on "
                        "them learns those defects as normal")
    return concerns
