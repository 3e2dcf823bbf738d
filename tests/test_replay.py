"""Inputs handled alike: `edgead sensor replay` takes every format the readers take, says at once when a file is
missing, refuses a transposed array clearly, and `edgead serve -v` logs each result (sub-commands take -v/-q too)."""

import queue
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from stream_helpers import free_port, part, template_run

from edgead.formats.pointcloud import PointCloudError, read_points, write_ply


def edgead(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgead", *args]


def lines_of(stream) -> queue.Queue:
    """The lines a process writes, collected by a thread (so a silent process cannot block the test)."""
    q: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [q.put(line) for line in stream], daemon=True).start()
    return q


def test_replay_of_csv_ply_and_npy_into_serve_logging_each_result(tmp_path):
    good, bad = part(1), part(2, defect=True)
    np.savetxt(tmp_path / "good.csv", good, delimiter=",")
    write_ply(tmp_path / "bad.ply", bad)
    np.save(tmp_path / "good.npy", good)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sensor = subprocess.Popen(edgead("sensor", "replay", "-q", *(str(tmp_path / f) for f in ("good.csv", "bad.ply",
                                     "good.npy")), "--pub", endpoint, "--rate", "5"), stderr=subprocess.PIPE, text=True)
    serve = subprocess.Popen(edgead("serve", "-v", "--engine", str(template_run()), "--threshold", "2.0", "--sub",
                                    endpoint, "--pub", f"tcp://127.0.0.1:{free_port()}"), stderr=subprocess.PIPE,
                             text=True)
    try:
        said, results = lines_of(serve.stderr), []
        deadline = time.monotonic() + 60
        while len(results) < 3:
            line = said.get(timeout=max(0.1, deadline - time.monotonic()))
            if "edgead.stream.service" in line:
                results.append(line)
        assert sensor.wait(30) == 0
        serve.send_signal(signal.SIGINT)
        assert serve.wait(30) == 0
    finally:
        sensor.kill()
        serve.kill()
    assert [" ANOMALOUS " in r for r in results] == [False, True, False]
    assert all("replay #" in r and "score" in r and "/ 2.000" in r for r in results), results


def test_a_missing_replay_file_is_reported_before_waiting_for_a_subscriber(tmp_path):
    np.save(tmp_path / "a.npy", part(1))
    t0 = time.monotonic()
    proc = subprocess.run(edgead("sensor", "replay", str(tmp_path / "a.npy"), str(tmp_path / "missing.pcd"), "--pub",
                                 "tcp://127.0.0.1:*", "--wait", "30"), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "missing.pcd: no such file" in proc.stderr
    assert time.monotonic() - t0 < 15  # not after the 30 s wait for a subscriber
    assert "publishing" not in proc.stderr


def test_a_transposed_npy_is_refused_not_read_as_three_points(tmp_path):
    np.save(tmp_path / "t.npy", part(1).T)  # (3, N)
    with pytest.raises(PointCloudError, match=r"got shape \(3, 1875\): transposed\?"):
        read_points(tmp_path / "t.npy")
    np.save(tmp_path / "l.npy", np.c_[part(1), np.zeros(1875)].T)  # (4, N): x, y, z, label rows
    with pytest.raises(PointCloudError, match="transposed"):
        read_points(tmp_path / "l.npy")
    np.save(tmp_path / "three.npy", part(1)[:3])  # three points stay three points
    assert read_points(tmp_path / "three.npy").shape == (3, 3)
