"""`edgead serve --metrics`: Prometheus text and a health check over real HTTP while frames flow through a real
`edgead serve` process; the health check's 503; addresses that cannot be used."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import msgpack
import pytest
import zmq
from stream_helpers import free_port, part, recv, template_run

from edgead.stream import protocol
from edgead.stream.metrics import MetricsServer
from edgead.stream.protocol import encode_frame


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found, f"{name} not in the scrape"
    return float(found.group(1))


def test_metrics_and_healthz_while_frames_flow():
    ctx = zmq.Context.instance()
    sensor = ctx.socket(zmq.XPUB)
    sensor.linger = 0
    sensor.bind("tcp://127.0.0.1:*")
    proc = subprocess.Popen([sys.executable, "-m", "edgead", "serve", "--engine", str(template_run()), "--threshold",
                             "2.0", "--sub", sensor.last_endpoint.decode(), "--pub", "tcp://127.0.0.1:*", "--policy",
                             "every", "--queue", "64", "--status-interval", "0.2", "--metrics", "127.0.0.1:0"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    client = ctx.socket(zmq.SUB)
    client.linger = 0
    header = msgpack.unpackb(encode_frame(part(0), 0, "cam")[1])
    frames = [encode_frame(part(i % 5, defect=i == 7), i, "cam") for i in range(20)]
    frames[12] = [b"edgead/frame/cam", msgpack.packb({**header, "seq": 12, "dtype": "int16"}), bytes(12)]
    try:
        line = proc.stderr.readline()
        found = re.search(r"results on (tcp://\S+); metrics on (http://\S+)/metrics", line)
        assert found, line
        base = found.group(2)
        client.subscribe(b"")
        client.connect(found.group(1))
        assert sensor.poll(10_000)
        sensor.recv()

        def stream():
            for parts in frames:
                sensor.send_multipart(parts)
                time.sleep(0.05)

        sender = threading.Thread(target=stream)
        sender.start()
        scrapes = []
        while sender.is_alive():  # scraped while frames flow
            scrapes.append((get(f"{base}/healthz"), get(f"{base}/metrics")[0]))
            time.sleep(0.05)
        sender.join()
        while True:  # the status that accounts for every frame
            topic, status = recv(client)
            if topic == protocol.STATUS_TOPIC and status["frames_out"] == len(frames):
                break
        code, text = get(f"{base}/metrics")
        missing = get(f"{base}/nothing")[0]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        with pytest.raises(urllib.error.URLError):  # the exporter stops with the service
            urllib.request.urlopen(f"{base}/healthz", timeout=2)
    finally:
        proc.kill()
        sensor.close()
        client.close()
    assert len(scrapes) >= 5 and all(s == ((200, "ok\n"), 200) for s in scrapes) and code == 200 and missing == 404
    assert metric(text, "edgead_frames_in_total") == metric(text, "edgead_results_total") == 20
    assert metric(text, "edgead_errors_total") == 1 and metric(text, "edgead_anomalous_total") == 1
    assert metric(text, "edgead_dropped_total") == 0
    assert metric(text, "edgead_seq_gaps_total") == 0  # the int16 frame is an error, but its seq was read
    assert metric(text, "edgead_latency_seconds_count") == 20 and metric(text, "edgead_healthy") == 1
    for key in ("seq_restarts", "not_inspected", "reconnects"):
        assert metric(text, f"edgead_{key}_total") == status[key]
    assert (f'edgead_model_info{{backend="numpy",hash="{status["model_hash"]}",name="template"}} 1.0'
            in text)


def test_healthz_answers_503_while_the_process_is_unhealthy():
    from prometheus_client import CollectorRegistry

    healthy = threading.Event()
    server = MetricsServer("127.0.0.1:0", CollectorRegistry(), healthy.is_set)
    server.start()
    try:
        before = get(f"http://{server.address}/healthz")
        healthy.set()
        after = get(f"http://{server.address}/healthz")
    finally:
        server.close()
    assert before == (503, "unhealthy\n") and after == (200, "ok\n")


@pytest.mark.parametrize("address, message", [("nonsense", "HOST:PORT"), ("busy", "cannot serve metrics")])
def test_serve_refuses_a_metrics_address_it_cannot_use(address, message):
    blocker = MetricsServer("127.0.0.1:0", __import__("prometheus_client").CollectorRegistry(), lambda: True)
    try:
        address = blocker.address if address == "busy" else address
        out = subprocess.run([sys.executable, "-m", "edgead", "serve", "--engine", str(template_run()), "--sub",
                              f"tcp://127.0.0.1:{free_port()}", "--metrics", address], capture_output=True,
                             text=True, timeout=60)
    finally:
        blocker.close()
    assert out.returncode == 2 and message in out.stderr, out.stderr
