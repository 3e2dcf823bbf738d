"""`edgead bridge mqtt` against a real Mosquitto broker and real services: results, status and last will; a broker
restart mid-run (what is lost, the bounded queue, the backoff); three lines into one broker; bad messages."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import msgpack
import numpy as np
import zmq
from plant_helpers import Mosquitto, Subscriber, needs_mosquitto, wait_until
from stream_helpers import part, recv_result, running_service, wait_status

from edgead.stream import protocol
from edgead.stream.bridges.mqtt import MqttBridge, MqttConfig
from edgead.stream.protocol import encode_frame

pytestmark = needs_mosquitto


@contextlib.contextmanager
def running_bridge(cfg: MqttConfig):
    bridge = MqttBridge(cfg)
    stop = threading.Event()
    thread = threading.Thread(target=bridge.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert bridge.ready.wait(5), "bridge did not start"
        yield bridge
    finally:
        stop.set()
        thread.join(15)
        assert not thread.is_alive(), "bridge did not stop"


def seqs(sub: Subscriber, topic: str) -> list[int]:
    return [r["seq"] for r in sub.results(topic)]


def test_results_status_and_last_will_reach_the_broker(tmp_path):
    broker = Mosquitto(tmp_path)
    sub = Subscriber(broker.port)
    header = msgpack.unpackb(encode_frame(part(0), 0, "cam")[1])
    frames = [encode_frame(part(1), 1, "cam"), encode_frame(part(2, defect=True), 2, "cam"),
              [b"edgead/frame/cam", msgpack.packb({**header, "seq": 3, "dtype": "int16"}), bytes(12)],
              encode_frame(part(4)[:5], 4, "cam"), encode_frame(part(5), 5, "a/b#")]
    try:
        with running_service(policy="every", queue=16) as (service, sensor, client):
            cfg = MqttConfig(sub=service.pub_endpoint, broker=broker.url, plant="p1", line="l1")
            with running_bridge(cfg) as bridge:
                wait_until(lambda: sub.on("edgead/p1/l1/status"), what="the service's status on the broker")
                for parts in frames:
                    sensor.send_multipart(parts)
                wait_until(lambda: len(sub.on("edgead/p1/l1/cam/result")) == 4, what="results")
                wait_until(lambda: sub.on("edgead/p1/l1/a%2Fb%23/result"), what="the encoded sensor's result")
                counters = bridge.counters()
        cam = sub.results("edgead/p1/l1/cam/result")
        status = json.loads(sub.on("edgead/p1/l1/status")[-1])
        other = sub.results("edgead/p1/l1/a%2Fb%23/result")
        assert [r["seq"] for r in cam] == [1, 2, 3, 4]
        assert [r["verdict"] for r in cam] == ["pass", "reject", "error", "error"]
        assert cam[2]["anomalous"] is None and "dtype" in cam[2]["error"] and cam[3]["not_inspected"] is True
        assert cam[1]["regions"] and all(r["plant"] == "p1" and r["line"] == "l1" for r in cam)
        assert other[0]["sensor"] == "a/b#" and other[0]["verdict"] == "pass"
        assert status["type"] == "status" and status["healthy"] is True and status["stale"] is False
        assert sub.on("edgead/p1/l1/bridge") == [b"online", b"offline"]  # said on connect, and on a clean stop
        assert counters["results"] == 5 and counters["invalid"] == counters["dropped"] == counters["missed"] == 0
    finally:
        sub.close()
        broker.stop()


def test_a_broker_restart_loses_nothing_queued_and_a_full_queue_drops_only_what_it_counts(tmp_path):
    """Two broker outages mid-stream. The first fits in the bridge's queue: every result arrives. The second
    overflows it: the results refused are counted, and exactly those are missing at the subscriber. QoS 1 is at
    least once, so duplicates are allowed (the broker redelivers what it did not record as acknowledged)."""
    broker = Mosquitto(tmp_path)
    sub = Subscriber(broker.port)
    topic, queue = "edgead/cam/result", 20
    try:
        with running_service(policy="every", queue=64) as (service, sensor, client):
            wait_status(client)
            cfg = MqttConfig(sub=service.pub_endpoint, broker=broker.url, queue=queue, reconnect=(0.1, 0.8),
                             metrics="127.0.0.1:0")
            with running_bridge(cfg) as bridge:
                wait_until(lambda: sub.on("edgead/status"), what="the service's status on the broker")
                sent = 0

                def send(n):
                    nonlocal sent
                    for _ in range(n):
                        sensor.send_multipart(encode_frame(part(sent % 5), sent, "cam"))
                        sent += 1
                    wait_until(lambda: bridge.counters()["results"] == sent, 60, "the bridge's results")

                def outage(n):
                    failures = bridge.counters()["broker_connect_failures"]
                    broker.stop()
                    wait_until(lambda: not bridge.counters()["broker_connected"], what="the bridge to notice")
                    t0 = time.monotonic()
                    send(n)
                    time.sleep(max(0.0, 2.0 - (time.monotonic() - t0)))  # down 2 s at least
                    broker.start()
                    t1 = time.monotonic()
                    wait_until(lambda: bridge.counters()["broker_connected"], what="the bridge to reconnect")
                    return bridge.counters()["broker_connect_failures"] - failures, t1 - t0, time.monotonic() - t1

                send(5)
                wait_until(lambda: len(set(seqs(sub, topic))) == 5, what="results before the outage")
                failures1, down1, back1 = outage(10)  # fits in the queue
                wait_until(lambda: len(set(seqs(sub, topic))) == 15, 20, "the results queued in the outage")
                failures2, down2, back2 = outage(30)  # overflows it
                wait_until(lambda: bridge.counters()["queued"] == 0, 20, "the queue to drain")
                time.sleep(0.5)  # stragglers and duplicates
                counters = bridge.counters()
                metrics = urllib.request.urlopen(f"http://{bridge.metrics.address}/metrics").read().decode()
                health = urllib.request.urlopen(f"http://{bridge.metrics.address}/healthz").status
        got = seqs(sub, topic)
        missing = sorted(set(range(sent)) - set(got))
        print(f"sent {sent}, received {len(got)} ({len(got) - len(set(got))} duplicates), missing {len(missing)}, "
              f"bridge dropped {counters['dropped']}; connect failures {failures1}, {failures2} in outages of "
              f"{down1:.1f}, {down2:.1f} s; back after {back1:.2f} s, {back2:.2f} s")
        assert not set(range(15)) - set(got)  # nothing lost in the outage the queue covered
        assert counters["dropped"] == len(missing) and 10 <= len(missing) <= 12
        assert missing == list(range(sent - len(missing), sent))  # a full queue refuses the newest
        for failures, down in ((failures1, down1), (failures2, down2)):  # 0.1, 0.2, 0.4, 0.8, 0.8 ... s: no storm
            assert 2 <= failures <= 5 + down / 0.8
        assert back1 < 3 and back2 < 3 and counters["broker_connects"] == 3 and counters["missed"] == 0
        assert f"edgead_bridge_dropped_total {float(len(missing))}" in metrics and health == 200
        assert "edgead_bridge_broker_connected 1.0" in metrics and "edgead_bridge_queued 0.0" in metrics
    finally:
        sub.close()
        broker.stop()


def test_three_lines_into_one_broker_every_result_arrives_once(tmp_path):
    """Three services, each with its bridge (`edgead bridge mqtt` processes), one broker; the sensors of every line
    have the same id: the topics tell the lines apart."""
    broker = Mosquitto(tmp_path)
    sub = Subscriber(broker.port)
    lines, n = ["line1", "line2", "line3"], 8
    bridges = []
    try:
        with contextlib.ExitStack() as stack:
            services = [stack.enter_context(running_service(policy="every", queue=64)) for _ in lines]
            for line, (service, _, _) in zip(lines, services, strict=True):
                bridges.append(subprocess.Popen(
                    [sys.executable, "-m", "edgead", "bridge", "mqtt", "--sub", service.pub_endpoint, "--broker",
                     broker.url, "--plant", "p1", "--line", line], env=os.environ, stderr=subprocess.PIPE, text=True))
            for line in lines:
                wait_until(lambda line=line: sub.on(f"edgead/p1/{line}/status"), 30, f"{line}'s status")
            for _, sensor, _ in services:
                for seq in range(n):
                    sensor.send_multipart(encode_frame(part(seq), seq, "top"))
            for line in lines:
                wait_until(lambda line=line: len(sub.on(f"edgead/p1/{line}/top/result")) >= n, 60, f"{line}")
            time.sleep(0.5)  # would-be duplicates
            bridges[0].kill()  # no goodbye: the broker publishes its last will
            for proc in bridges[1:]:
                proc.send_signal(signal.SIGTERM)
            codes = [proc.wait(15) for proc in bridges]
            wait_until(lambda: all(sub.on(f"edgead/p1/{line}/bridge")[-1:] == [b"offline"] for line in lines),
                       what="every bridge offline")
        for line in lines:
            results = sub.results(f"edgead/p1/{line}/top/result")
            assert sorted(r["seq"] for r in results) == list(range(n)), line  # each once
            assert all(r["plant"] == "p1" and r["line"] == line and r["sensor"] == "top" for r in results)
            assert json.loads(sub.on(f"edgead/p1/{line}/status")[0])["line"] == line
        assert codes == [-signal.SIGKILL, 0, 0]
        assert "stopped; 8 results, 0 invalid, 0 missed, 0 dropped" in bridges[1].stderr.read()
    finally:
        for proc in bridges:
            proc.kill()
        sub.close()
        broker.stop()


def test_bad_messages_are_counted_never_pass_and_a_silent_service_reads_as_down(tmp_path):
    """A real result, then broken copies of it sent on a real PUB socket in place of the service."""
    with running_service(policy="every", queue=4) as (service, sensor, client):
        wait_status(client)
        sensor.send_multipart(encode_frame(part(1), 1, "cam"))
        real = recv_result(client)
        status = wait_status(client)
    broker = Mosquitto(tmp_path)
    sub = Subscriber(broker.port)
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.linger = 0
    pub.bind("tcp://127.0.0.1:*")

    def result(**changes):
        return protocol.encode_message(f"edgead/result/{changes.get('sensor', 'cam')}", {**real, **changes})

    bad = [result(seq=10, score=float("nan")), result(seq=11, status="error", anomalous=False),
           result(seq=12, schema=3), [b"edgead/result/cam", b"\xc1"], [b"edgead/result/cam"],
           result(seq=13, sensor="x" * 200), protocol.encode_message("edgead/status", {**status, "schema": 3})]
    good = [result(seq=14, sensor="a/b#", extra={"deep": [[[[[[[[1]]]]]]]], "blob": b"\0", "nan": float("nan")}),
            result(seq=15)]
    try:
        cfg = MqttConfig(sub=pub.last_endpoint.decode(), broker=broker.url, status_timeout=0.5)
        with running_bridge(cfg) as bridge:
            silent = json.loads(wait_until(lambda: sub.on("edgead/status"), what="the stale status")[0])
            wait_until(lambda: (pub.send_multipart(protocol.encode_message("edgead/status", status)),
                                bridge.counters()["statuses"])[1], what="the bridge to subscribe")
            for parts in bad + good:
                pub.send_multipart(parts)
            wait_until(lambda: len(sub.on("edgead/cam/result")) == 4, what="results")
            wait_until(lambda: sub.on("edgead/a%2Fb%23/result"), what="the encoded sensor's result")
            counters = bridge.counters()
            fresh = json.loads(sub.on("edgead/status")[-1])
        cam = sub.results("edgead/cam/result")
        assert [(r["seq"], r["verdict"], r["status"]) for r in cam] == [
            (10, "error", "error"), (11, "error", "error"), (12, "error", "error"), (15, "pass", "ok")]
        assert all(r["error"].startswith("bridge: invalid result from the service") and r["anomalous"] is None
                   and r["score"] is None for r in cam[:3])
        assert "schema 3" in cam[2]["error"] and "score" in cam[0]["error"]
        odd = sub.results("edgead/a%2Fb%23/result")[0]
        assert odd["verdict"] == "pass" and odd["extra"]["nan"] is None and "blob" not in odd["extra"]
        assert counters["invalid"] == 7 and counters["results"] == 5
        assert silent["healthy"] is False and silent["stale"] is True and "no status" in silent["error"]
        assert fresh["healthy"] is True and fresh["stale"] is False and np.isfinite(fresh["fps"])
    finally:
        pub.close()
        sub.close()
        broker.stop()
