"""The synthetic benchmark: layout, determinism, labels that match the geometry, one-sided scan track."""

from __future__ import annotations

import argparse
import functools
import json

import numpy as np
import pytest
from pykdtree.kdtree import KDTree

from edgead.cli import synth as synth_cli
from edgead.formats.dataset import detect_layout, find_categories, load_test, load_train
from edgead.tools import synth

CATS = ["l_bracket", "pipe_elbow"]
SMALL = dict(categories=CATS, points=4000, n_train=2, n_good=2, n_defective=5)


@functools.cache
def _dense(category):
    """A dense clean sample of a part (points, normals) to measure defects against."""
    part = synth.build_part(category)
    return synth.sample_surfaces(part.surfaces, np.random.default_rng(99), 150_000)


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synth.generate(root / "a", seed=3, workers=1, **SMALL)
    return root


def test_layout_and_loaders(bench):
    root = bench / "a"
    cats = find_categories(root)
    assert [c.name for c in cats] == sorted(CATS)
    for c in cats:
        assert detect_layout(c) == "real3d"
        train = load_train(c)
        assert len(train) == 2 and all(3500 < len(t) < 4500 for t in train)
        assert sorted(p.name for p in (c / "train").iterdir()) == ["000_template.pcd", "001_template.pcd"]
        test = load_test(c)
        assert len(test) == 7 and sum(s.label for s in test) == 5
        kinds = sorted(s.name.split("_", 1)[1] for s in test if s.label == 1)
        assert kinds == sorted(synth.DEFECT_TYPES)  # one of each
        for s in test:
            assert 2000 < len(s.points) < 3000 and s.points.dtype == np.float32
            assert ("good" in s.name) == (s.label == 0)
    meta = json.loads((root / "synth.json").read_text())
    assert meta["seed"] == 3 and set(meta["categories"]) == set(CATS)


def test_same_seed_same_bytes_whatever_the_workers(bench, tmp_path):
    synth.generate(tmp_path / "b", seed=3, workers=2, **SMALL)
    a, b = _files(bench / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a)


def test_different_seed_different_data(bench, tmp_path):
    synth.generate(tmp_path / "c", seed=4, workers=1, **SMALL)
    a, c = _files(bench / "a"), _files(tmp_path / "c")
    common = [k for k in a if k in c and k.endswith(".pcd")]
    assert common and all(a[k] != c[k] for k in common)


def test_a_subset_of_categories_gives_the_same_scans(bench, tmp_path):
    synth.generate(tmp_path / "d", seed=3, workers=1, **{**SMALL, "categories": ["pipe_elbow"]})
    a, d = _files(bench / "a"), _files(tmp_path / "d")
    scans = [k for k in d if k.startswith("pipe_elbow/")]
    assert scans and all(a[k] == d[k] for k in scans)


def test_labels_consistent(bench):
    root = bench / "a"
    meta = json.loads((root / "synth.json").read_text())
    for cat in CATS:
        size = meta["categories"][cat]["size_mm"]
        gt = {p.stem for p in (root / cat / "gt").iterdir()}
        for s in load_test(root / cat):
            if s.label == 0:
                assert s.name not in gt and not s.labels.any()
                continue
            frac = s.labels.mean()
            assert 0.001 < frac < 0.1, (cat, s.name, frac)
            region = s.points[s.labels == 1]
            extent = np.linalg.norm(region - np.median(region, 0), axis=1).max()
            assert extent < 0.3 * size, (cat, s.name, extent)  # one compact region, a few % of the part
            assert meta["categories"][cat]["samples"][f"test/{s.name}"]["n_defect_points"] == int(s.labels.sum())
    # every scan sits somewhere else in the sensor frame
    centres = [load_train(root / cat)[i].mean(0) for cat in CATS for i in range(2)]
    assert min(np.linalg.norm(a - b) for i, a in enumerate(centres) for b in centres[i + 1:]) > 5


@pytest.mark.parametrize("kind", synth.DEFECT_TYPES)
@pytest.mark.parametrize("category", synth.CATEGORIES)
def test_defects_are_geometric_and_labelled(category, kind):
    """Labelled points left the clean surface by a visible amount; unlabelled points stayed (within 5 %)."""
    part = synth.build_part(category)
    rng = np.random.default_rng(11)
    pts, nrm = synth.sample_surfaces(part.surfaces, rng, 8000)
    dense, _ = _dense(category)
    pts2, _, labels, desc = synth.apply_defect(kind, pts, nrm, 123, part.size, 8000 / part.area, rng)
    assert labels.sum() >= 5
    moved, _ = KDTree(pts).query(pts2, k=1)  # 0 for a point the defect left where it was
    off_surface, _ = KDTree(np.concatenate([dense, pts])).query(pts2, k=1)
    peak = off_surface[labels == 1].max()
    assert peak > 0.005 * part.size, desc
    displacement = abs(desc.get("height", desc.get("depth", 0.0)))  # pits and blobs leave other points alone
    assert moved[labels == 0].max() <= 0.05 * displacement + 1e-9, desc


@pytest.mark.parametrize("category", ["box_housing", "pipe_elbow", "bottle"])
def test_scan_track_is_one_sided(category):
    part = synth.build_part(category)
    dense, dn = _dense(category)
    tree = KDTree(dense)

    def facing_fraction(scan, cam):
        r, t = np.array(scan.info["rotation"]), np.array(scan.info["translation"])
        p = (scan.points.astype(np.float64) - t) @ r  # back to the part frame
        dist, idx = tree.query(p, k=1)
        on_surface = dist < 0.01 * part.size  # leave out the flying-pixel outliers
        facing = np.einsum("ij,ij->i", dn[idx], cam - p) > 0
        return facing[on_surface].mean(), len(p)

    one = synth.make_scan(category, "sink", seed=1, index=0, split="test", n_points=6000, track="scan")
    cam = np.array(one.info["camera"])
    frac_one, n_one = facing_fraction(one, cam)
    full = synth.make_scan(category, "good", seed=1, index=0, split="test", n_points=6000, track="full")
    frac_full, _ = facing_fraction(full, cam)
    assert frac_one > 0.95, frac_one
    assert frac_full < 0.8, frac_full
    assert 1500 < n_one < 6100  # thinned to n_points (plus outliers)
    assert one.labels.sum() >= 12  # the defect was put where the camera sees it
    # training scans stay full 360-degree scans on the scan track
    train = synth.make_scan(category, "good", seed=1, index=0, split="train", n_points=6000, track="scan")
    assert "camera" not in train.info


def test_cli(tmp_path, capsys):
    p = argparse.ArgumentParser()
    synth_cli.add_arguments(p)
    args = p.parse_args(["--out", str(tmp_path / "o"), "--seed", "2", "--track", "scan", "--categories", "bottle",
                         "--points", "2000", "--train", "1", "--good", "1", "--defective", "1", "--workers", "1"])
    assert synth_cli.main(args) == 0
    assert "wrote 3 scans" in capsys.readouterr().out
    assert sorted(str(f.relative_to(tmp_path / "o")) for f in (tmp_path / "o").rglob("*.*")) == [
        "bottle/gt/001_bulge.txt", "bottle/test/000_good.pcd", "bottle/test/001_bulge.pcd",
        "bottle/train/000_template.pcd", "synth.json"]
    with pytest.raises(SystemExit):
        p.parse_args(["--out", "x", "--categories", "teapot"])
    with pytest.raises(ValueError, match="unknown category"):
        synth.generate(tmp_path / "x", categories=["teapot"])
    with pytest.raises(ValueError, match="too few"):
        synth.generate(tmp_path / "x", points=10)


def test_real_track_is_a_depth_camera_scan():
    """One-sided, at a line's offset, deterministic, with flying pixels labelled good and the defect labelled."""
    good = synth.make_scan("l_bracket", "good", seed=4, index=0, split="test", n_points=3000, track="real")
    again = synth.make_scan("l_bracket", "good", seed=4, index=0, split="test", n_points=3000, track="real")
    assert np.array_equal(good.points, again.points)
    assert 1500 < len(good.points) < 4500 and good.labels.sum() == 0
    assert good.info["n_flying"] >= 0 and 0 < good.info["returned"] < 1
    assert good.points[:, 2].min() > 400  # the line's frame: the camera calibrated to the belt, far off the origin
    bad = synth.make_scan("l_bracket", "bulge", seed=4, index=1, split="test", n_points=3000, track="real",
                          depth=0.02)
    assert bad.labels.sum() >= 12
    assert bad.info["defect"]["depth_rel"] == pytest.approx(0.02)
    # training scans stay full, clean scans
    train = synth.make_scan("l_bracket", "good", seed=4, index=0, split="train", n_points=3000, track="real")
    assert "camera" not in train.info


def test_defect_size_sweep(tmp_path):
    meta = synth.generate(tmp_path, seed=1, track="real", categories=["hex_bolt"], points=2000, n_train=1,
                          n_good=1, n_defective=10, depths=[0.005, 0.03], workers=1)
    assert meta["depths"] == [0.005, 0.03]
    depths = sorted(round(s["defect"]["depth_rel"], 6) for s in meta["categories"]["hex_bolt"]["samples"].values()
                    if "defect" in s)
    assert depths == [0.005] * 5 + [0.03] * 5  # every (type, depth) pair in turn
    with pytest.raises(ValueError, match="fractions of the part's size"):
        synth.generate(tmp_path / "x", depths=[3.0])
