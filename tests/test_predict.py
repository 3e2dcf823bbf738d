"""`edgead predict` on real files: one row per scan, full JSON lines, heat-map images, and scans that cannot be
judged never passing."""

import csv
import json

import numpy as np
import pytest
from test_evaluate import write_category

from edgead import cli
from edgead.formats.pointcloud import write_ply
from edgead.tools.predict import CSV_FIELDS

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def category(tmp_path_factory):
    """A category (2 good + 2 defective test scans of an ellipsoid; 2 mm bulges), a template run and its
    F1 threshold."""
    root = tmp_path_factory.mktemp("predict")
    write_category(root / "ellipsoid", n_good=2, n_bad=2, n=4000)
    assert cli.main(["-q", "train", "template", "--data", str(root / "ellipsoid"), "--out", str(root / "run")]) == 0
    assert cli.main(["-q", "calibrate", "threshold", "--engine", str(root / "run"), "--normal",
                     str(root / "ellipsoid"), "--anomalous", str(root / "ellipsoid"), "--out",
                     str(root / "t.json")]) == 0
    return root


def read_rows(out):
    with open(out / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_a_folder_and_files_in_any_format_with_images(category, tmp_path, capsys):
    test = category / "ellipsoid" / "test"
    extra = tmp_path / "extra"
    extra.mkdir()
    points = np.loadtxt(category / "ellipsoid" / "gt" / "bad_3.txt")[:, :3]
    write_ply(extra / "bad_3_again.ply", points)  # another format, the same defective part
    np.savetxt(extra / "bad_3_again.csv", points, delimiter=",")
    np.save(extra / "five_points.npy", points[:5])  # too few points to judge
    (extra / "broken.pcd").write_bytes(b"VERSION .7\nFIELDS x y z\n")  # unreadable
    out = tmp_path / "out"
    code = cli.main(["predict", str(category / "run"), str(test), str(extra), "--out", str(out), "--threshold",
                     str(category / "t.json"), "--images"])
    assert code == 1  # not every scan could be judged
    fields, rows = read_rows(out)
    assert tuple(fields) == CSV_FIELDS
    by_name = {r["file"].rsplit("/", 1)[1]: r for r in rows}
    assert list(by_name) == ["bad_2.pcd", "bad_3.pcd", "good_0.pcd", "good_1.pcd", "bad_3_again.csv",
                             "bad_3_again.ply", "broken.pcd", "five_points.npy"]  # folder by folder, sorted
    for name in ("bad_2.pcd", "bad_3.pcd", "bad_3_again.csv", "bad_3_again.ply"):
        assert by_name[name]["anomalous"] == "true" and by_name[name]["status"] == "ok"
        assert int(by_name[name]["n_regions"]) >= 1
    for name in ("good_0.pcd", "good_1.pcd"):
        assert by_name[name]["anomalous"] == "false" and by_name[name]["n_regions"] == "0"
    assert by_name["bad_3_again.csv"]["score"] == by_name["bad_3_again.ply"]["score"]
    assert by_name["five_points.npy"]["status"] == "not inspected"
    assert by_name["broken.pcd"]["status"] == "error" and "bad header" in by_name["broken.pcd"]["error"]
    for name in ("five_points.npy", "broken.pcd"):  # no score, no decision: never a pass
        assert by_name[name]["score"] == "" and by_name[name]["anomalous"] == ""
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["file"] for r in records] == [r["file"] for r in rows]
    assert sum(r["passed"] for r in records) == 2 and not any(r["passed"] for r in records if r["status"] != "ok")
    bad = next(r for r in records if r["file"].endswith("bad_3.pcd"))
    region = bad["regions"][0]
    assert set(region) >= {"centroid", "bbox_min", "bbox_max", "extent", "n_points", "max_score"}
    assert bad["model_hash"] == rows[0]["model_hash"] and bad["threshold"] == json.loads(
        (category / "t.json").read_text())["threshold"]
    images = sorted(p.name for p in (out / "images").iterdir())
    assert images == ["bad_2.png", "bad_3.png", "bad_3_again.csv.png", "bad_3_again.ply.png", "good_0.png",
                      "good_1.png"]  # scored scans only; repeated stems kept apart
    assert all((out / "images" / i).read_bytes()[:8] == PNG for i in images)
    assert "8 scans: 4 anomalous, 2 passed, 1 not inspected, 1 unreadable" in capsys.readouterr().out


def test_exit_0_when_all_judged_scores_without_threshold_and_refuses_old_results(category, tmp_path, capsys):
    out = tmp_path / "out"
    test = category / "ellipsoid" / "test"
    assert cli.main(["-q", "predict", str(category / "run"), str(test), "--out", str(out)]) == 0
    _, rows = read_rows(out)
    assert len(rows) == 4 and all(r["status"] == "ok" and r["anomalous"] == "" and r["score"] for r in rows)
    assert "no --threshold: scores only" in capsys.readouterr().out
    assert cli.main(["predict", str(category / "run"), str(test), "--out", str(out)]) == 2
    assert "results of an earlier batch" in capsys.readouterr().err
    assert cli.main(["-q", "predict", str(category / "run"), str(test / "good_0.pcd"), "--out", str(out),
                     "--force"]) == 0
    assert len(read_rows(out)[1]) == 1
    assert cli.main(["predict", str(category / "run"), str(category / "ellipsoid"), "--out", str(tmp_path)]) == 2
    assert "keeps its scans in test/" in capsys.readouterr().err
