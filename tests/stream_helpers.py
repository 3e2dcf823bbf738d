"""Shared by the streaming tests: a small real detector, synthetic parts, and a service on loopback sockets."""

from __future__ import annotations

import atexit
import contextlib
import functools
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import zmq

from edgead.runtime import EdgeDetector
from edgead.stream import protocol
from edgead.stream.service import Service, ServiceConfig
from edgead.train import train

TIMEOUT_MS = 10_000


def part(seed: int = 0, defect: bool = False, n: int = 1500) -> np.ndarray:
    """Points (mm) on the top and sides of a 40 x 30 x 10 mm block; a defect is a 4 mm bump on the top face."""
    rng = np.random.default_rng(seed)
    top = np.c_[rng.uniform(-20, 20, n), rng.uniform(-15, 15, n), np.full(n, 10.0)]
    side = np.c_[np.full(n // 4, 20.0), rng.uniform(-15, 15, n // 4), rng.uniform(0, 10, n // 4)]
    pts = np.r_[top, side] + rng.normal(0, 0.05, (n + n // 4, 3))
    if defect:
        near = np.linalg.norm(pts[:, :2] - [8.0, 5.0], axis=1) < 3.0
        pts[near & (pts[:, 2] > 9), 2] += 4.0
    return pts.astype(np.float32)


@functools.lru_cache(maxsize=1)
def template_run() -> Path:
    """A run directory of the torch-free template detector, trained on one clean block (real ICP and distances)."""
    out = Path(tempfile.mkdtemp(prefix="edgead-stream-test-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    train("template", [part(seed=100, n=3000)], out)
    return out


def free_port() -> int:
    """A loopback TCP port free now (for servers that must be told their port up front)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def detector(threshold: float | None = 2.0) -> EdgeDetector:
    return EdgeDetector.load(template_run(), threshold=threshold)


def recv(sock: zmq.Socket, timeout_ms: int = TIMEOUT_MS) -> tuple[str, dict]:
    if not sock.poll(timeout_ms):
        raise TimeoutError("no message in time")
    return protocol.decode_message(sock.recv_multipart())


def recv_result(sock: zmq.Socket, timeout_ms: int = TIMEOUT_MS) -> dict:
    """The next result, skipping status messages."""
    deadline = time.monotonic() + timeout_ms / 1e3
    while True:
        topic, msg = recv(sock, max(1, int((deadline - time.monotonic()) * 1e3)))
        if topic != protocol.STATUS_TOPIC:
            return msg


@contextlib.contextmanager
def running_service(det=None, ctx=None, sensor_setup=None, client_setup=None, sub_endpoint=None, **cfg):
    """A Service in a thread, wired to a sensor XPUB and a result SUB on 127.0.0.1 ephemeral ports.

    Yields (service, sensor socket, client socket) once the service's subscription reached the sensor; call
    :func:`wait_status` before counting on results (PUB/SUB slow joining). Stops the service on exit. With
    ``sub_endpoint`` the service connects there instead, to sensors the test starts itself (the sensor is None).
    """
    ctx = ctx or zmq.Context.instance()
    sensor = None
    if sub_endpoint is None:
        sensor = ctx.socket(zmq.XPUB)
        sensor.linger = 0
        if sensor_setup:
            sensor_setup(sensor)
        sensor.bind("tcp://127.0.0.1:*")
        sub_endpoint = sensor.last_endpoint.decode()
    config = ServiceConfig(engine="-", sub=sub_endpoint, pub="tcp://127.0.0.1:*",
                           status_interval=0.2, linger_ms=500, **cfg)
    service = Service(det or detector(), config, ctx=ctx)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    client = ctx.socket(zmq.SUB)
    client.linger = 0
    try:
        assert service.ready.wait(5), "service did not start"
        if client_setup:
            client_setup(client)
        client.subscribe(b"")
        client.connect(service.pub_endpoint)
        if sensor is not None and sensor.poll(5000):
            sensor.recv()  # the service's subscription reached the sensor
        yield service, sensor, client
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive(), "service did not stop"
        if sensor is not None:
            sensor.close()
        client.close()


def wait_status(client: zmq.Socket, timeout_ms: int = 5000) -> dict:
    deadline = time.monotonic() + timeout_ms / 1e3
    while time.monotonic() < deadline:
        topic, msg = recv(client, max(1, int((deadline - time.monotonic()) * 1e3)))
        if topic == protocol.STATUS_TOPIC:
            return msg
    raise TimeoutError("no status message")
