"""The figures of `edgead eval --plot` and `edgead predict --images`: what they show is what was computed."""

import numpy as np
import pytest
from test_evaluate import detector, runs, samples, write_category  # noqa: F401 - detector and runs are fixtures

from edgead import cli
from edgead.tools import evaluate, figures

pytest.importorskip("matplotlib")


def test_ground_truth_outline_encloses_the_labelled_points():
    from matplotlib.path import Path as Polygon

    s = samples(0, 1, n=6000)[0]  # one 6 mm bulge, labelled
    for a, b, _ in figures.VIEWS:
        (poly,) = figures.outlines(s.points, s.labels, (a, b))
        inside = Polygon(poly).contains_points(s.points[:, [a, b]], radius=1e-6)
        assert inside[s.labels == 1].all()
        assert inside[s.labels == 0].mean() < 0.1  # the outline is the defect, not the part
    assert figures.outlines(s.points, np.zeros(len(s.points)), (0, 1)) == []


def test_thinning_for_drawing_keeps_every_hot_point_and_draws_them_last():
    scores = np.random.default_rng(0).random(100_000).astype(np.float32)
    scores[::997] = 5.0  # 101 hot points
    scores[3] = np.nan
    keep = figures.drawn(scores, threshold=2.0, max_points=1000)
    assert len(keep) == 1000 and set(np.flatnonzero(scores > 2.0)) <= set(keep) and 3 not in keep
    assert (np.diff(scores[keep]) >= 0).all()


def test_eval_plot_fills_every_row_and_writes_a_jpeg(detector, runs, tmp_path, monkeypatch):  # noqa: F811
    made = []
    real_save = figures.save
    monkeypatch.setattr(figures, "save", lambda fig, path: (made.append(fig), real_save(fig, path)))
    rep = evaluate.report(detector, runs, "somewhere")
    evaluate.plot(runs, rep, tmp_path / "eval.jpg")
    assert (tmp_path / "eval.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    rows: dict[int, set] = {}
    for ax in made[0].axes:
        spec = ax.get_subplotspec()
        if spec is not None and spec.get_gridspec().ncols == 4:
            rows.setdefault(spec.rowspan.start, set()).update(spec.colspan)
    assert rows == {0: {0, 1, 2, 3}, 1: {0, 1, 2, 3}, 2: {0, 1, 2, 3}}  # "good_only" has one scan: it spans two
    titles = "\n".join(ax.get_title() for ax in made[0].axes)
    assert "the highest-scoring of 3 defective scans: its clearest detection" in titles
    assert "the highest-scoring of 2 good scans: the likeliest false alarm" in titles
    assert "confusion matrix at threshold" in titles and "F1-optimal on these scans: optimistic" in titles


def test_an_unwritable_plot_type_fails_before_the_evaluation(tmp_path, capsys):
    write_category(tmp_path / "cat", n_good=1, n_bad=1, n=3000)
    assert cli.main(["-q", "train", "template", "--data", str(tmp_path / "cat"), "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    for bad in ("eval.bmp", "eval"):
        assert cli.main(["eval", str(tmp_path / "run"), "--data", str(tmp_path / "cat"), "--plot",
                         str(tmp_path / bad)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and "cannot write" in err and ".jpg" in err  # nothing evaluated first
    assert cli.main(["-q", "eval", str(tmp_path / "run"), "--data", str(tmp_path / "cat"), "--threshold", "0.5",
                     "--plot", str(tmp_path / "eval.jpeg")]) == 0
    assert (tmp_path / "eval.jpeg").read_bytes()[:3] == b"\xff\xd8\xff"
