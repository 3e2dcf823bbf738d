"""Sensors that come and go: ended normally, killed -9 mid-stream, replaced by a new process re-binding the port.

Each restart is a real process on a real loopback port; after every restart, every frame the new sensor sends must
get its result, and the service must neither crash (libzmq once aborted on ``!_more``) nor stop listening.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stream_helpers import free_port, recv, running_service, template_run, wait_status

from edgead.stream import protocol

SENSOR = Path(__file__).with_name("sensor_process.py")
RESTARTS = 20
FRAMES = 3


def start_sensor(endpoint: str, run: str, n: int, forever: bool = False) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SENSOR), endpoint, run, str(n)] + (["--forever"] if forever else []),
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def results_for(client, wanted: set[str], timeout_s: float = 30.0) -> dict[str, dict]:
    """Results by frame id until every id in ``wanted`` has one."""
    got, deadline = {}, time.monotonic() + timeout_s
    while not wanted <= set(got):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no result for {sorted(wanted - set(got))}"
        topic, msg = recv(client, int(remaining * 1e3))
        if topic != protocol.STATUS_TOPIC:
            got[msg["frame_id"]] = msg
    return got


@pytest.mark.parametrize("way", ["ended", "killed", "rebound"])
def test_sensor_restarts_of_every_kind_lose_no_frame_after_the_restart(way):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    procs: list[subprocess.Popen] = []
    try:
        with running_service(sub_endpoint=endpoint, policy="every", queue=256) as (service, _, client):
            wait_status(client)
            previous = None
            for i in range(RESTARTS):
                run = f"{way}{i}"
                if way == "rebound" and previous is not None:
                    previous.send_signal(signal.SIGTERM)  # the new process binds while this one is still going
                proc = start_sensor(endpoint, run, FRAMES, forever=way == "killed")
                procs.append(proc)
                got = results_for(client, {f"{run}-{k}" for k in range(FRAMES)})
                assert all(r["status"] == "ok" and r["anomalous"] is False for r in got.values())
                if way == "killed":
                    proc.kill()  # mid-stream: it is still sending
                if way == "ended":
                    assert proc.wait(20) == 0
                if previous is not None:
                    previous.wait(20)
                previous = proc
            previous.kill()
            previous.wait(20)
            status = wait_status(client)
            assert service.healthy() and status["healthy"] is True
    finally:
        for proc in procs:  # a failed assertion must not leave sensors running
            proc.kill()
    assert status["frames_out"] >= RESTARTS * FRAMES and status["errors"] == 0


def test_serve_survives_repeated_cli_replays(tmp_path):
    """The reported crash: ``edgead sensor replay`` run to its end several times against one ``edgead serve``."""
    from sensor_process import block

    from edgead.formats.pointcloud import write_pcd

    files = [tmp_path / f"good_{i}.pcd" for i in range(2)]
    for i, f in enumerate(files):
        write_pcd(f, block(i))
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    serve = subprocess.Popen([sys.executable, "-m", "edgead", "serve", "--engine", str(template_run()), "--sub",
                              f"tcp://127.0.0.1:{port}", "--pub", "tcp://127.0.0.1:*", "--policy", "every",
                              "--threshold", "2.0"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert "results on" in serve.stderr.readline()
        for _ in range(6):
            out = subprocess.run([sys.executable, "-m", "edgead", "sensor", "replay", *map(str, files), "--pub",
                                  f"tcp://127.0.0.1:{port}", "--rate", "0"], capture_output=True, text=True,
                                 timeout=60, env=env)
            assert out.returncode == 0 and "sent 2 frames" in out.stderr, out.stderr
        assert serve.poll() is None, "serve died"
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(20) == 0
        summary = re.search(r"12 frames in, (\d+) results out, (\d+) dropped, 0 errors", serve.stderr.read())
        # every frame is answered or counted: a frame still queued when SIGTERM comes is dropped, by design
        assert summary and int(summary[1]) + int(summary[2]) == 12 and int(summary[1]) >= 10, summary
    finally:
        serve.kill()
