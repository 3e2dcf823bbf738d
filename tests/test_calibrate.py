import json

import numpy as np
import pytest
from stream_helpers import part, template_run
from test_evaluate import write_category

from edgead import cli
from edgead.formats.pointcloud import write_pcd
from edgead.formats.scene import crop, read_scene
from edgead.runtime import EdgeDetector
from edgead.tools.calibrate import calibrate_scene, f1_threshold, far_threshold


def tilted_scene(seed=0):
    """A 200 x 150 mm conveyor tilted by 10 degrees, 600 mm from the sensor, with a block standing on it."""
    rng = np.random.default_rng(seed)
    belt = np.c_[rng.uniform(-100, 100, 6000), rng.uniform(-75, 75, 6000), rng.normal(0, 0.2, 6000)]
    block = part(seed) + [0, 0, 0.5]  # on the belt, 0.5 .. 10.5 mm up (plane frame)
    a = np.radians(10)
    r = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    to_sensor = lambda p: (p @ r.T * [1, 1, -1] + [0, 0, 600]).astype(np.float32)  # noqa: E731 - parts face z-
    return to_sensor(belt), to_sensor(block), r


def test_scene_fit_finds_the_tilted_belt_and_crops_the_part():
    belt, block, r = tilted_scene()
    scan = np.r_[belt, block, np.full((5, 3), np.nan, np.float32)]
    scene = calibrate_scene(scan, tol=1.0)
    normal = np.asarray(scene.axes[2])
    expected = r[:, 2] * [1, 1, -1]  # the belt's up direction, in the sensor frame
    assert normal @ expected > 0.9999  # oriented towards the part
    kept = crop(scan, scene)
    assert len(kept) >= 0.9 * len(block) and np.isin(kept, block).all(1).all()  # no belt, no NaN
    up = expected.astype(np.float32)
    assert len(crop(block + 300 * up, scene)) == len(block)  # all inside the 3..500 mm height band
    assert len(crop(block + 600 * up, scene)) == 0  # above the ROI
    assert len(crop(block + 200 * np.asarray(scene.axes[0], np.float32), scene)) == 0  # beside the belt


def test_scene_file_round_trip(tmp_path):
    belt, block, _ = tilted_scene()
    scan = tmp_path / "scan.pcd"
    write_pcd(scan, np.r_[belt, block])
    out = tmp_path / "scene.json"
    assert cli.main(["calibrate", "scene", str(scan), "--out", str(out), "--max-height", "50"]) == 0
    scene = read_scene(out)
    assert scene.hi[2] == 50 and scene.lo[2] == 3.0
    np.testing.assert_array_equal(crop(block, scene), crop(block, calibrate_scene(np.r_[belt, block], 1.0,
                                                                                  max_height=50)))
    (tmp_path / "bad.json").write_text(json.dumps({"origin": [0, 0]}))
    with pytest.raises(ValueError, match="not a scene calibration"):
        read_scene(tmp_path / "bad.json")


def test_far_threshold_allows_the_target_false_alarms():
    normal = np.arange(100, dtype=float)  # scores 0..99
    assert far_threshold(normal, 0.0) == 99  # nothing above: no false alarm
    t = far_threshold(normal, 0.05)
    assert (normal > t).sum() == 5
    assert far_threshold(normal[:10], 0.01) == 9  # 10 scans cannot resolve 1 %: the maximum


def test_f1_threshold_separates_and_prefers_fewer_false_alarms():
    t, f1 = f1_threshold(np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.9]))
    assert f1 == 1.0 and 0.3 <= t < 0.5
    t, f1 = f1_threshold(np.array([0.1, 0.6]), np.array([0.5, 0.9]))  # overlapping
    assert f1 == pytest.approx(0.8) and t < 0.5


def test_threshold_calibration_with_the_detector_and_serve_loading_it(tmp_path):
    normal_dir, anomalous_dir = tmp_path / "normal", tmp_path / "anomalous"
    normal_dir.mkdir()
    anomalous_dir.mkdir()
    for i in range(4):
        np.save(normal_dir / f"{i}.npy", part(10 + i))
        np.save(anomalous_dir / f"{i}.npy", part(20 + i, defect=True))
    far_out, f1_out = tmp_path / "far.json", tmp_path / "f1.json"
    common = ["calibrate", "threshold", "--engine", str(template_run()), "--normal", str(normal_dir)]
    assert cli.main([*common, "--far", "0.0", "--out", str(far_out)]) == 0
    assert cli.main([*common, "--anomalous", str(anomalous_dir), "--out", str(f1_out)]) == 0
    far_doc, f1_doc = json.loads(far_out.read_text()), json.loads(f1_out.read_text())
    assert far_doc["method"] == "far" and far_doc["threshold"] == max(far_doc["normal_scores"])
    assert far_doc["far_measured"] == 0.0 and far_doc["n_normal"] == 4
    assert far_doc["far_upper_95"] == pytest.approx(1 - 0.05 ** (1 / 4))  # 0 of 4: below 53 %
    assert f1_doc["method"] == "f1" and f1_doc["f1"] == 1.0 and f1_doc["recall"] == 1.0
    assert max(f1_doc["normal_scores"]) <= f1_doc["threshold"] < min(f1_doc["anomalous_scores"])
    det = EdgeDetector.load(template_run(), threshold=f1_out)  # what `serve --threshold FILE` does
    assert det.threshold == f1_doc["threshold"]
    assert det.detect(part(30)).anomalous is False and det.detect(part(31, defect=True)).anomalous is True


def test_threshold_from_a_category_directory_uses_its_good_test_scans_only(tmp_path, capsys, caplog):
    """The folder `edgead train` takes works for calibration too; training scans, ground truth and a false-alarm
    target finer than the scans resolve are refused or said."""
    data = tmp_path / "ellipsoid"
    write_category(data, n_good=3, n_bad=2, n=3000)
    run = tmp_path / "run"
    assert cli.main(["train", "template", "--data", str(data), "--out", str(run), "-q"]) == 0
    out = tmp_path / "t.json"
    common = ["calibrate", "threshold", "--engine", str(run), "--out", str(out), "--normal"]
    assert cli.main([*common, str(data), "--far", "0.01"]) == 0
    doc = json.loads(out.read_text())
    captured = capsys.readouterr()
    assert doc["n_normal"] == 3 and doc["threshold"] == max(doc["normal_scores"])  # good_0..2, not bad_3, bad_4
    assert "the 3 good test scans of" in captured.out and "2 defective ones left out" in captured.out
    assert "--far 0.01 cannot be resolved with 3 good scans (steps of 1/3 = 33.3%); it needs at least 100" \
        in caplog.text  # a warning (logged: -q hides it)
    assert "0 of 3 good scans above it: the true false-alarm rate is below 63.2% at 95 % confidence" in captured.out
    assert cli.main([*common, str(data / "test"), "--anomalous", str(data)]) == 0  # the test split: the same scans
    f1 = json.loads(out.read_text())
    assert f1["method"] == "f1" and f1["n_normal"] == 3 and f1["n_anomalous"] == 2 and f1["recall"] == 1.0
    capsys.readouterr()
    assert cli.main([*common, str(data / "train")]) == 2
    assert "these are training scans" in capsys.readouterr().err
    assert cli.main([*common, str(data / "gt")]) == 2
    assert "2 scans label points as defective (bad_3.txt, bad_4.txt)" in capsys.readouterr().err
    assert cli.main([*common, str(tmp_path / "empty")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_a_threshold_is_refused_for_any_other_model(tmp_path):
    from edgead.train import train

    normal_dir = tmp_path / "normal"
    normal_dir.mkdir()
    for i in range(3):
        np.save(normal_dir / f"{i}.npy", part(10 + i))
    out = tmp_path / "t.json"
    assert cli.main(["calibrate", "threshold", "--engine", str(template_run()), "--normal", str(normal_dir), "--out",
                     str(out)]) == 0
    other = tmp_path / "other"
    train("template", [part(seed=101, n=3000)], other)  # another good part: another model
    with pytest.raises(ValueError, match="not for this model"):
        EdgeDetector.load(other, threshold=out)
    doc = json.loads(out.read_text())
    del doc["model_hash"]
    out.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="does not record the model"):
        EdgeDetector.load(template_run(), threshold=out)
