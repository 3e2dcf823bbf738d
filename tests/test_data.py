"""Dataset layouts built in temporary directories: Real3D-AD, Anomaly-ShapeNet, plain folders, and broken ones."""

from __future__ import annotations

import numpy as np
import pytest

from edgead.formats.dataset import DatasetError, TestSample, detect_layout, find_categories, load_test, load_train
from edgead.formats.pointcloud import PointCloudError, write_pcd, write_ply


def _pts(n, seed):
    return (np.random.default_rng(seed).normal(size=(n, 3)) * 10 + 300).astype(np.float32)


def _gt(path, pts, labels, sep=" "):
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [sep.join([f"{v:.3f}" for v in p] + [f"{float(lab):.1f}"]) for p, lab in zip(pts, labels, strict=True)]
    path.write_text("\n".join(rows) + "\n")


def make_real3d(cat, with_nan=False):
    """A category in Real3D-AD's layout: 2 templates, 2 good and 2 defective test scans, gt for the defective."""
    for i in range(2):
        pts = _pts(100 + i, i)
        if with_nan:
            pts[::10] = np.nan
        write_pcd(cat / "train" / f"{i}_template.pcd", pts)
    write_pcd(cat / "test" / "3_good.pcd", _pts(80, 3))
    write_pcd(cat / "test" / "10_good.pcd", _pts(81, 10))
    write_pcd(cat / "test" / "9_template.pcd", _pts(50, 9))  # 'temp' files in test/ are skipped
    for i, kind in ((4, "bulge"), (5, "sink")):
        pts = _pts(90, i)
        write_pcd(cat / "test" / f"{i}_{kind}.pcd", pts)
        labels = np.zeros(90, np.uint8)
        labels[:7] = 1
        _gt(cat / "gt" / f"{i}_{kind}.txt", pts, labels)
    return cat


def make_shapenet(cat):
    """A category in Anomaly-ShapeNet's layout: upper-case GT/, 'positive' good samples, comma-separated gt."""
    name = cat.name
    for i in range(3):
        write_pcd(cat / "train" / f"{name}_template{i}.pcd", _pts(60, i), fmt="binary_compressed")
    write_pcd(cat / "test" / f"{name}_positive0.pcd", _pts(70, 5))
    pts = _pts(75, 6)
    write_pcd(cat / "test" / f"{name}_bulge0.pcd", pts)
    labels = (np.arange(75) < 5).astype(np.uint8)
    _gt(cat / "GT" / f"{name}_bulge0.txt", pts, labels, sep=",")
    return cat


def test_real3d_layout(tmp_path):
    cat = make_real3d(tmp_path / "airplane", with_nan=True)
    assert detect_layout(cat) == "real3d"
    train = load_train(cat)
    assert [len(t) for t in train] == [90, 90]  # NaN rows dropped
    assert all(t.dtype == np.float32 and np.isfinite(t).all() for t in train)
    test = load_test(cat)
    assert [s.name for s in test] == ["10_good", "3_good", "4_bulge", "5_sink"]
    assert all(isinstance(s, TestSample) for s in test)
    by = {s.name: s for s in test}
    assert by["3_good"].label == 0 and by["3_good"].labels.shape == (80,) and not by["3_good"].labels.any()
    bulge = by["4_bulge"]
    assert bulge.label == 1 and bulge.labels.dtype == np.uint8 and int(bulge.labels.sum()) == 7
    assert bulge.points.shape == (90, 3) and bulge.points.dtype == np.float32
    np.testing.assert_allclose(bulge.points, _pts(90, 4), atol=6e-4)  # from gt/ (3 decimals)


def test_anomaly_shapenet_layout(tmp_path):
    cat = make_shapenet(tmp_path / "ashtray0")
    assert detect_layout(cat) == "anomaly_shapenet"
    assert [len(t) for t in load_train(cat)] == [60, 60, 60]
    test = load_test(cat)
    assert [(s.name, s.label, int(s.labels.sum()), len(s.points)) for s in test] == [
        ("ashtray0_bulge0", 1, 5, 75), ("ashtray0_positive0", 0, 0, 70)]


def test_anomaly_shapenet_without_gt_folder_is_recognised_by_names(tmp_path):
    cat = tmp_path / "bowl"
    write_pcd(cat / "train" / "bowl_template0.pcd", _pts(10, 0))
    write_pcd(cat / "test" / "bowl_positive0.pcd", _pts(10, 1))
    assert detect_layout(cat) == "anomaly_shapenet"


def test_plain_folder_of_scans(tmp_path):
    d = tmp_path / "scans"
    write_ply(d / "b.ply", _pts(30, 1))
    write_pcd(d / "a.pcd", _pts(20, 0))
    np.save(d / "c.npy", _pts(25, 2))
    (d / "notes.md").write_text("not a scan")
    assert detect_layout(d) == "folder"
    assert [len(t) for t in load_train(d)] == [20, 30, 25]  # sorted by name
    with pytest.raises(DatasetError, match="no test split"):
        load_test(d)


def test_find_categories(tmp_path):
    make_real3d(tmp_path / "root" / "car")
    make_real3d(tmp_path / "root" / "airplane")
    (tmp_path / "root" / "README").write_text("x")
    (tmp_path / "root" / "empty").mkdir()
    assert [p.name for p in find_categories(tmp_path / "root")] == ["airplane", "car"]
    assert find_categories(tmp_path / "root" / "car") == [tmp_path / "root" / "car"]
    with pytest.raises(DatasetError, match="no categories"):
        find_categories(tmp_path / "root" / "empty")
    with pytest.raises(DatasetError, match="no such directory"):
        find_categories(tmp_path / "missing")


def test_train_prefers_templates_else_any_scan(tmp_path):
    cat = make_real3d(tmp_path / "c")
    write_pcd(cat / "train" / "extra_scan.pcd", _pts(5, 9))
    assert len(load_train(cat)) == 2  # only *template* files
    other = tmp_path / "d"
    write_pcd(other / "train" / "1_prototype.pcd", _pts(5, 9))
    write_pcd(other / "test" / "1_good.pcd", _pts(5, 9))
    assert [len(t) for t in load_train(other)] == [5]


def test_clear_errors_for_broken_directories(tmp_path):
    with pytest.raises(DatasetError, match="no such directory"):
        load_train(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a dataset directory"):
        detect_layout(tmp_path / "empty")
    (tmp_path / "file.pcd").write_text("x")
    with pytest.raises(DatasetError, match="not a directory"):
        detect_layout(tmp_path / "file.pcd")

    cat = make_real3d(tmp_path / "c")
    (cat / "gt" / "5_sink.txt").unlink()
    with pytest.raises(DatasetError, match=r"5_sink.pcd: defective sample without ground truth"):
        load_test(cat)

    empty_train = tmp_path / "e"
    (empty_train / "train").mkdir(parents=True)
    write_pcd(empty_train / "test" / "1_good.pcd", _pts(5, 1))
    with pytest.raises(DatasetError, match="no training scans"):
        load_train(empty_train)

    no_test = tmp_path / "f"
    write_pcd(no_test / "train" / "1_template.pcd", _pts(5, 1))
    with pytest.raises(DatasetError, match="no test/ directory"):
        load_test(no_test)

    bad = make_real3d(tmp_path / "g")
    (bad / "train" / "0_template.pcd").write_bytes(b"FIELDS x y z\nPOINTS 3\nDATA binary\n\0\0")
    with pytest.raises(PointCloudError, match="0_template.pcd: truncated data"):
        load_train(bad)

    bad_gt = make_real3d(tmp_path / "h")
    (bad_gt / "gt" / "4_bulge.txt").write_text("1 2 3\n4 5 6\n")
    with pytest.raises(PointCloudError, match="4_bulge.txt: ground truth needs four columns"):
        load_test(bad_gt)

    all_nan = make_real3d(tmp_path / "i")
    write_pcd(all_nan / "train" / "0_template.pcd", np.full((4, 3), np.nan))
    with pytest.raises(DatasetError, match="no finite points"):
        load_train(all_nan)
