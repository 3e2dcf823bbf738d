import importlib.util
import json
from dataclasses import dataclass

import numpy as np
import pytest
from test_template import part_scan

from edgead import EdgeDetector
from edgead.formats.dataset import load_train
from edgead.tools import evaluate, metrics
from edgead.train import template


@dataclass
class Sample:  # the fields of edgead.formats.dataset.TestSample that evaluation reads
    name: str
    points: np.ndarray
    labels: np.ndarray
    label: int


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_run")
    template.train([part_scan(15000, s)[0] for s in range(3)], out)
    return EdgeDetector.load(out)


def samples(n_good, n_bad, seed=0, n=6000):
    out = []
    for i in range(n_good + n_bad):
        bad = i >= n_good
        pts, lab = part_scan(n, 1000 * seed + 50 + i, bulge=2.0 if bad else 0.0, one_sided=i % 2 == 1)
        out.append(Sample(f"{'bad' if bad else 'good'}_{i}", pts, lab, int(bad)))
    return out


@pytest.fixture(scope="module")
def runs(detector):
    cat_a = samples(3, 3)
    nan_rows = [0, 5, 17]
    cat_a[4].points = cat_a[4].points.copy()
    cat_a[4].points[nan_rows] = np.nan  # dropped by the detector: NaN scores, left out of the point metrics
    only_good = samples(2, 0, seed=1)
    return [evaluate.run_category(detector, "ellipsoid", cat_a),
            evaluate.run_category(detector, "good_only", only_good)]


def test_report_metrics_timing_and_nan_points(detector, runs):
    rep = evaluate.report(detector, runs, "somewhere")
    json.dumps(rep)  # JSON-able as it stands
    a = rep["categories"]["ellipsoid"]
    assert a["n_good"] == 3 and a["n_defective"] == 3 and len(a["samples"]) == 6
    assert a["o_auroc"] == 1.0 and a["o_aupr"] == 1.0  # a 2 mm bulge against 0.05 mm noise
    assert a["p_auroc"] > 0.85 and a["p_aupr"] > 0.3  # the bulge tapers to nothing at the edge of its label
    # pooled over the category's points (not averaged per scan), NaN rows left out
    py, ps = runs[0].point_arrays()
    assert len(py) == sum(len(s.points) for s in samples(3, 3)) - 3 and np.isfinite(ps).all()
    assert a["p_auroc"] == pytest.approx(metrics.roc_auc(py, ps))
    assert a["samples"][4]["n_dropped"] == 3
    # a category with one class: undefined metrics are None and the mean skips them
    g = rep["categories"]["good_only"]
    assert all(g[m] is None for m in evaluate.METRICS)
    assert rep["mean"] == {m: a[m] for m in evaluate.METRICS}
    sizes = [len(s.points) for s in samples(3, 3)] + [6000, 6000]
    assert rep["n_frames"] == 8 and rep["points_per_frame"] == pytest.approx(np.mean(sizes))
    for st in evaluate.STAGES:
        t = rep["timing_ms"][st]
        assert 0 <= t["median"] <= t["p95"]
    table = evaluate.format_table(rep)
    assert "ellipsoid" in table and "good_only" in table and "mean" in table and "    -" in table


def test_label_count_mismatch_is_a_clear_error(detector):
    s = samples(1, 0)[0]
    s.labels = s.labels[:-1]
    with pytest.raises(ValueError, match="point labels for"):
        evaluate.run_category(detector, "x", [s])


def test_a_scan_the_detector_cannot_judge_counts_as_flagged(detector):
    """Not inspected is never a pass: the scan ranks above every judged one, its points are left out."""
    cat = samples(2, 2)
    cat.append(Sample("good_tiny", cat[0].points[:5], cat[0].labels[:5], 0))  # 5 points: not inspected
    run = evaluate.run_category(detector, "x", cat)
    tiny = run.samples[-1]
    assert tiny["score"] is None and tiny["status"] == "not inspected"
    assert "5 finite points of 5, the model needs at least" in tiny["error"]
    y, s = run.object_arrays()
    assert s[-1] > s[:-1].max() and np.isfinite(s).all()  # flagged above every judged scan
    assert len(run.point_arrays()[0]) == sum(len(x.points) for x in cat[:-1])
    rep = evaluate.report(detector, [run], "somewhere")
    c = rep["categories"]["x"]
    assert c["n_not_inspected"] == 1 and c["o_auroc"] < 1.0  # a good scan above the defective ones
    far = evaluate.detection_at_far(run.samples, 0.01)
    assert far["false_alarms"] == pytest.approx(1 / 3)  # the unjudged good scan is a false alarm at any threshold
    assert "not inspected, counted as flagged (never passed): 1 scans: x/good_tiny" in evaluate.format_table(rep)


def test_plot_writes_png(detector, runs, tmp_path):
    pytest.importorskip("matplotlib")
    rep = evaluate.report(detector, runs, "somewhere")
    out = tmp_path / "eval.png"
    evaluate.plot(runs, rep, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000


def write_category(root, n_good=2, n_bad=2, n=4000):
    """A tiny category in the Real3D-AD layout: train/*template*.pcd, test/*.pcd, gt/<defective>.txt."""
    from edgead.formats.pointcloud import write_pcd

    for d in ("train", "test", "gt"):
        (root / d).mkdir(parents=True)
    for i in range(3):
        write_pcd(root / "train" / f"{i}_template.pcd", part_scan(3 * n, i)[0])
    for s in samples(n_good, n_bad, seed=2, n=n):
        write_pcd(root / "test" / f"{s.name}.pcd", s.points)
        if s.label:
            np.savetxt(root / "gt" / f"{s.name}.txt", np.c_[s.points, s.labels], fmt="%.4f %.4f %.4f %d")


def test_train_and_eval_commands_on_a_category_root(tmp_path, capsys):
    from edgead import cli

    write_category(tmp_path / "data" / "ellipsoid")
    assert cli.main(["train", "template", "--data", str(tmp_path / "data" / "ellipsoid"), "--out",
                     str(tmp_path / "run")]) == 0
    assert cli.main(["eval", str(tmp_path / "run"), "--data", str(tmp_path / "data"),
                     "--json", str(tmp_path / "r.json")]) == 0  # a root of categories
    out = capsys.readouterr().out
    assert "ellipsoid" in out and "O-AUROC" in out and "timing" in out
    rep = json.loads((tmp_path / "r.json").read_text())
    cat = rep["categories"]["ellipsoid"]
    assert cat["n_good"] == 2 and cat["n_defective"] == 2 and cat["o_auroc"] == 1.0 and cat["p_auroc"] > 0.85
    names = sorted(s["name"] for s in cat["samples"])
    assert names == ["bad_2", "bad_3", "good_0", "good_1"]
    # the library function gives the same metrics as the command
    again = evaluate.evaluate(EdgeDetector.load(tmp_path / "run"), tmp_path / "data" / "ellipsoid")
    assert {m: again["categories"]["ellipsoid"][m] for m in evaluate.METRICS} == {m: cat[m] for m in evaluate.METRICS}


def test_voxel_scoring_benchmark_reports_each_size(tmp_path):
    """benchmarks/voxel_scoring.py: one JSON line per voxel size; size 0 is exactly `edgead eval`'s scoring."""
    import subprocess
    import sys
    from pathlib import Path

    data = tmp_path / "ellipsoid"
    write_category(data, n=20000)
    template.train([part_scan(20000, s)[0] for s in range(3)], tmp_path / "run")
    script = Path(__file__).parents[1] / "benchmarks" / "voxel_scoring.py"
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), "--data", str(data),
                           "--sizes", "0,1.0"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    exact, voxel = (json.loads(line) for line in proc.stdout.splitlines())
    ref = evaluate.evaluate(EdgeDetector.load(tmp_path / "run"), data)["categories"]["ellipsoid"]
    assert (exact["score_voxel"], voxel["score_voxel"]) == (0.0, 1.0)
    assert exact["p_auroc"] == round(ref["p_auroc"], 4) and exact["o_auroc"] == round(ref["o_auroc"], 4)
    assert voxel["o_auroc"] == 1.0 and abs(voxel["p_auroc"] - exact["p_auroc"]) < 0.05  # 1 mm voxels, 2 mm bulge
    assert voxel["p_auroc"] != exact["p_auroc"]  # the voxel size reached the scoring


def test_detection_rate_at_a_fixed_false_alarm_rate():
    good = [{"label": 0, "score": float(s)} for s in range(100)]  # 0..99
    bad = [{"label": 1, "score": 98.5, "defect": "pit", "depth": 0.003},
           {"label": 1, "score": 97.0, "defect": "pit", "depth": 0.02},
           {"label": 1, "score": 99.5, "defect": "bulge", "depth": 0.02}]
    one = evaluate.detection_at_far(good + bad, 0.01)
    assert one["threshold"] == 98.0 and one["false_alarms"] == 0.01  # one good scan of 100 above it
    assert one["detection"] == pytest.approx(2 / 3)
    assert one["by_type"] == {"bulge": 1.0, "pit": 0.5}
    assert one["by_depth"] == {"0.25-0.4": 1.0, "1.7-2.5": 0.5}
    five = evaluate.detection_at_far(good + bad, 0.05)
    assert five["threshold"] == 94.0 and five["detection"] == 1.0
    assert evaluate.detection_at_far(good, 0.01) is None


def test_eval_reports_detection_by_defect_depth(tmp_path):
    from edgead.tools import synth

    synth.generate(tmp_path / "d", seed=2, categories=["hex_bolt"], points=3000, n_train=2, n_good=4, n_defective=5,
                   depths=[0.02], workers=1)
    run = tmp_path / "run"
    template.train(load_train(tmp_path / "d" / "hex_bolt"), run)
    det = EdgeDetector.load(run)
    runs = evaluate.run_all(det, tmp_path / "d")
    rep = evaluate.report(det, runs, tmp_path / "d")
    assert set(rep["detection"]) == {"0.01", "0.05"}
    assert list(rep["detection"]["0.05"]["by_depth"]) == ["1.7-2.5"]
    assert set(rep["detection"]["0.05"]["by_type"]) == set(synth.DEFECT_TYPES)
    assert "at 5 % false alarms" in evaluate.format_table(rep)
    if importlib.util.find_spec("matplotlib"):
        assert evaluate.plot_detection(rep, tmp_path / "det.png")
        assert (tmp_path / "det.png").read_bytes()[:4] == b"\x89PNG"


def test_line_like_benchmark_ablates_every_rule_on_every_track(tmp_path):
    """benchmarks/line_like.py: one template per category serves every track; its "1+2+3" row is `edgead eval`'s."""
    import subprocess
    import sys
    from pathlib import Path

    from edgead.tools import synth

    for track in ("full", "real"):
        synth.generate(tmp_path / track, seed=5, track=track, categories=["hex_bolt"], points=3000, n_train=2,
                       n_good=3, n_defective=3, workers=1)
    script = Path(__file__).parents[1] / "benchmarks" / "line_like.py"
    proc = subprocess.run([sys.executable, str(script), "--data", str(tmp_path), "--tracks", "full", "real",
                           "--work", str(tmp_path / "work"), "--json", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    out = json.loads((tmp_path / "r.json").read_text())["tracks"]
    assert set(out) == {"full", "real"} and "| 1+2+3 |" in proc.stdout and "| real | 3 good |" in proc.stdout
    ref = evaluate.evaluate(EdgeDetector.load(tmp_path / "work" / "hex_bolt"), tmp_path / "real")
    ours = out["real"]["hex_bolt"]["metrics"]["1+2+3"]
    assert ours["p_auroc"] == pytest.approx(ref["categories"]["hex_bolt"]["p_auroc"], abs=1e-9)
