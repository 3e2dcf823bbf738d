"""``edgead serve``: sensor frames in over ZeroMQ, one msgpack result out per frame (see ``docs/protocol.md``).

Threads, each owning what it touches (ZeroMQ sockets are not thread-safe, detectors are not either):

- *receiver* owns the SUB socket: receives raw multipart frames and hands them to the :class:`FrameBuffer`, which
  applies the flow-control policy (``latest``: keep only the newest frame; ``every``: bounded FIFO) and counts drops;
- *worker* (the thread calling :meth:`Service.run`) owns the detector: decodes, crops, detects, finds regions;
  anything wrong with a frame becomes an error result, never an exception that stops the service;
- *publisher* owns the PUB socket: sends results in order and a status message every ``status_interval`` seconds.

A quality gate fails closed: a thread that dies stops the service, and :meth:`Service.run` raises
:class:`ServiceFailure` naming it, so the process exits non-zero instead of running on silent. Stopping
(SIGINT/SIGTERM or ``stop.set()``): the receiver stops, the worker finishes the frame in flight, the publisher sends
everything queued and closes with a linger so results reach subscribers.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from edgead.detectors import NotInspected
from edgead.formats.scene import crop, read_scene
from edgead.runtime import MAX_POINTS
from edgead.stream import protocol
from edgead.stream.metrics import ServiceMetrics
from edgead.stream.regions import anomalous_regions
from edgead.stream.security import make_server, start_authenticator

log = logging.getLogger(__name__)

POLICIES = ("latest", "every")
RECONNECT_GRACE_S = 0.2  # after a disconnect, how long ZeroMQ has to schedule its own reconnect
RECONNECT_BACKOFF_S = (0.1, 5.0)  # our reconnects of connections ZeroMQ gave up on: first delay, cap (doubling)


@dataclass
class ServiceConfig:
    engine: str = ""
    sub: str = "tcp://127.0.0.1:5555"  # connect: the sensor binds its PUB socket
    pub: str = "tcp://127.0.0.1:5556"  # bind: controllers and gateways connect here (tcp://*:5556 for the line)
    threshold: str | float | None = None  # a number or a calibration file; default: the engine's own
    scene: str | None = None  # scene calibration file: crop the part out of the raw sensor cloud
    policy: str = "latest"
    queue: int = 8  # frames the `every` policy holds before it drops new ones
    point_scores: bool = False  # add per-point float32 scores to results
    region_radius: float | None = None  # mm; default 3 x point spacing
    max_points: int = MAX_POINTS
    status_interval: float = 1.0
    device: str = "cpu"
    curve_secret: str | None = None  # the service's secret key file: CURVE on both sockets
    curve_authorized: str | None = None  # directory of public keys of clients allowed in
    linger_ms: int = 2000
    metrics: str | None = None  # HOST:PORT: Prometheus /metrics and /healthz over HTTP (edgead.stream.metrics)

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if self.queue < 1:
            raise ValueError(f"queue must be at least 1, got {self.queue}")


class ServiceFailure(RuntimeError):
    """A service thread died: the service stopped rather than run on without it."""


class FrameBuffer:
    """The hand-over from receiver to worker, where the flow-control policy drops frames (and counts them).

    ``latest`` does here what ZMQ_CONFLATE would do in the socket, which cannot: conflate breaks multipart messages
    and counts nothing. The receiver drains the socket continuously, so frames wait here, not in ZeroMQ's queues.
    """

    def __init__(self, policy: str, size: int):
        self.latest = policy == "latest"
        self.size = 1 if self.latest else size
        self.items: collections.deque = collections.deque()
        self.cond = threading.Condition()
        self.dropped = 0

    def put(self, item) -> None:
        with self.cond:
            if len(self.items) >= self.size:
                self.dropped += 1
                if not self.latest:
                    return  # every: keep the frames already queued, refuse the new one
                self.items.popleft()  # latest: the stale frame goes
            self.items.append(item)
            self.cond.notify()

    def get(self, timeout: float):
        with self.cond:
            self.cond.wait_for(lambda: self.items, timeout)
            return self.items.popleft() if self.items else None

    def clear(self) -> None:
        """Drop (and count) what is still waiting: at shutdown."""
        with self.cond:
            self.dropped += len(self.items)
            self.items.clear()


class SequenceTracker:
    """Each sensor's ``seq``: frames missing on the way (gaps) and sequences that start over (restarts).

    A seq that does not move forward (a restarted or wrapped sensor, a duplicate) is a restart, and so is a jump
    forward of more than ``max_gap`` (no sensor loses a million frames in a row; a corrupt or hostile counter does
    not inflate the gap count). At most ``max_sensors`` sensor ids are remembered (least recently seen go first).
    """

    def __init__(self, max_gap: int = 1 << 20, max_sensors: int = 1024):
        self.max_gap, self.max_sensors = max_gap, max_sensors
        self.last: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.gaps = self.restarts = 0

    def observe(self, sensor: str, seq: int) -> None:
        last = self.last.pop(sensor, None)
        if last is not None:
            if seq <= last or seq - last - 1 > self.max_gap:
                self.restarts += 1
            else:
                self.gaps += seq - last - 1
        self.last[sensor] = seq
        if len(self.last) > self.max_sensors:
            self.last.popitem(last=False)


class Stats:
    """Counters, each meaning one thing (``docs/protocol.md``), and the recent latencies for status."""

    def __init__(self):
        self.lock = threading.Lock()
        self.t0 = time.time()
        self.frames_in = self.frames_out = self.errors = self.not_inspected = self.reconnects = 0
        self.sequences = SequenceTracker()
        self.latency_ms: collections.deque = collections.deque(maxlen=1000)  # received -> published
        self.published: collections.deque = collections.deque(maxlen=10000)  # publish times, for fps


class Service:
    def __init__(self, detector, cfg: ServiceConfig, ctx: zmq.Context | None = None):
        self.det, self.cfg = detector, cfg
        self.ctx = ctx or zmq.Context.instance()
        self.scene = read_scene(cfg.scene) if cfg.scene else None
        self.model = protocol.Model(detector.name, detector.model_hash, detector.backend)
        self.buffer = FrameBuffer(cfg.policy, cfg.queue)
        self.out: queue.Queue = queue.Queue()
        self.stats = Stats()
        self.ready = threading.Event()  # set once both sockets are up; pub_endpoint is then known
        self.pub_endpoint = ""
        self.result_seq = 0
        self.failure: str | None = None
        self.metrics = None  # the metrics exporter while run() serves with cfg.metrics
        self._stop = threading.Event()  # run() replaces it with the caller's
        self._threads: list[threading.Thread] = []

    # -- sockets and threads -----------------------------------------------------------------------------------
    def _socket(self, kind: int) -> zmq.Socket:
        sock = self.ctx.socket(kind)
        sock.linger = self.cfg.linger_ms
        if self.cfg.curve_secret:
            make_server(sock, self.cfg.curve_secret)
        return sock

    def _fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
        self._stop.set()

    def _spawn(self, name: str, target, *args) -> threading.Thread:
        def guarded():
            try:
                target(*args)
            except BaseException as exc:  # a dead thread stops the service; it never runs on without it
                self._fail(f"{name} thread died: {type(exc).__name__}: {exc}")

        thread = threading.Thread(target=guarded, name=f"edgead-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def healthy(self) -> bool:
        """True while no thread has died (the worker included) and every started thread is running."""
        return self.failure is None and all(t.is_alive() for t in self._threads)

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set. Runs the worker in the calling thread. Raises ServiceFailure when a thread
        died (the service stops with it), ValueError when the endpoints cannot be used."""
        if self.cfg.metrics:
            self.metrics = ServiceMetrics(self, self.cfg.metrics)  # binds now: a port in use fails before the rest
        auth = start_authenticator(self.ctx, self.cfg.curve_authorized) if self.cfg.curve_authorized else None
        sub, pub = self._socket(zmq.SUB), self._socket(zmq.PUB)
        sub.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE_BYTES)
        sub.rcvhwm = 64
        sub.reconnect_ivl, sub.reconnect_ivl_max = 100, 1000  # ZeroMQ's own reconnects back off to 1 s
        sub.subscribe(protocol.FRAME_PREFIX.encode())
        # the monitor exists before the connection does: a handshake can fail within a millisecond of connect()
        monitor = sub.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_CONNECTED)
        try:
            sub.connect(self.cfg.sub)
            pub.bind(self.cfg.pub)
        except zmq.ZMQError as exc:
            sub.disable_monitor()
            for sock in (monitor, sub, pub):
                sock.close(linger=0)
            if auth is not None:
                auth.stop()
            if self.metrics is not None:
                self.metrics.close()
            raise ValueError(f"cannot use endpoints --sub {self.cfg.sub} / --pub {self.cfg.pub}: {exc}") from None
        self.pub_endpoint = pub.last_endpoint.decode()
        self._stop = stop  # a failing thread stops the whole service through the caller's event
        self._spawn("receiver", self._receive, sub, monitor)
        self._spawn("publisher", self._publish, pub)
        if self.metrics is not None:
            self.metrics.start()
        self.ready.set()
        try:
            while not self._stop.is_set():
                item = self.buffer.get(timeout=0.1)
                if item is not None:
                    self.out.put(self.process(*item))
        except BaseException as exc:
            self._fail(f"worker thread died: {type(exc).__name__}: {exc}")
            raise
        finally:
            self._stop.set()
            receiver, publisher = self._threads
            receiver.join()
            self.buffer.clear()  # frames received but not started count as dropped
            self.out.put(None)
            publisher.join()
            if auth is not None:
                auth.stop()
            if self.metrics is not None:
                self.metrics.close()
        if self.failure is not None:
            raise ServiceFailure(self.failure)

    def _receive(self, sub: zmq.Socket, monitor: zmq.Socket) -> None:
        """Drain the SUB socket into the frame buffer, and keep the sensor connection alive.

        ZeroMQ reconnects by itself after a sensor goes away (it schedules a retry right after the disconnect), but
        gives a connection up for good after a protocol error: a message part over MAXMSGSIZE, or a CURVE handshake
        that fails. A disconnect that no retry follows within RECONNECT_GRACE_S is such a case, and only then the
        receiver connects again itself, backing off from 0.1 s to 5 s while nothing valid arrives (a wrong-key
        sensor must not cause a reconnect storm). Disconnecting a live connection instead can abort libzmq
        (``!_more`` in fq.cpp) when it drops a pipe between two parts of a message.
        """
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        dead_since, backoff = None, RECONNECT_BACKOFF_S[0]
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(50))
                while monitor.poll(0):
                    event = recv_monitor_message(monitor)["event"]
                    dead_since = time.monotonic() if event == zmq.EVENT_DISCONNECTED else None
                if sub in events and self._drain(sub):
                    backoff = RECONNECT_BACKOFF_S[0]
                if dead_since is not None and time.monotonic() >= dead_since + max(RECONNECT_GRACE_S, backoff):
                    self._drain(sub)  # whole messages only: nothing half-read when the old pipe goes
                    try:
                        sub.disconnect(self.cfg.sub)
                    except zmq.ZMQError:
                        pass  # already gone with its session
                    sub.connect(self.cfg.sub)
                    dead_since, backoff = None, min(2 * backoff, RECONNECT_BACKOFF_S[1])
                    with self.stats.lock:
                        self.stats.reconnects += 1
        finally:
            sub.disable_monitor()
            monitor.close(linger=0)
            sub.close(linger=0)

    def _drain(self, sub: zmq.Socket) -> int:
        """Hand every message waiting on ``sub`` to the frame buffer. Returns how many."""
        n = 0
        while True:
            try:
                parts = sub.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return n
            n += 1
            identity = protocol.frame_identity(parts)  # before flow control: a dropped frame is no sequence gap
            with self.stats.lock:
                self.stats.frames_in += 1
                if identity is not None:
                    self.stats.sequences.observe(*identity)
            self.buffer.put((parts, time.time()))

    def _publish(self, pub: zmq.Socket) -> None:
        next_status = time.monotonic()
        try:
            while True:
                if time.monotonic() >= next_status:
                    pub.send_multipart(protocol.encode_message(protocol.STATUS_TOPIC, self.status()))
                    next_status += self.cfg.status_interval
                try:
                    result = self.out.get(timeout=max(0.0, next_status - time.monotonic()))
                except queue.Empty:
                    continue
                if result is None:
                    break
                result["t_published"] = now = time.time()
                pub.send_multipart(self._encode_result(result))
                with self.stats.lock:
                    self.stats.frames_out += 1
                    self.stats.errors += result["status"] != "ok"
                    self.stats.not_inspected += result["not_inspected"]
                    self.stats.published.append(now)
                    self.stats.latency_ms.append((now - result["t_received"]) * 1e3)
                if self.metrics is not None:
                    self.metrics.observe(result)
                if log.isEnabledFor(logging.INFO):  # serve -v
                    log.info("%s %s", result["sensor"], protocol.describe(result))
            pub.send_multipart(protocol.encode_message(protocol.STATUS_TOPIC, self.status()))
        finally:
            pub.close()  # with linger: queued messages still go out

    def _encode_result(self, result: dict) -> list[bytes]:
        """The result's message; one that cannot be encoded goes out as an error result for its frame."""
        topic = protocol.RESULT_PREFIX + (result["sensor"] or "")
        try:
            return protocol.encode_message(topic, result)
        except (TypeError, ValueError, OverflowError) as exc:
            bad = dict(result, status="error", error=f"internal error: result not encodable: {exc}", score=None,
                       anomalous=None, regions=[], point_scores=None)
            bad.pop("point_scores")
            return protocol.encode_message(topic, bad)

    # -- per frame ---------------------------------------------------------------------------------------------
    def process(self, parts, t_received: float) -> dict:
        """Raw message parts -> result map. Never raises: a bad frame gives an error result."""
        t0 = time.perf_counter()
        timings: dict[str, float] = {"queue": (time.time() - t_received) * 1e3}
        header: dict = {}
        try:
            try:
                header, points = protocol.decode_frame(parts, self.cfg.max_points)
            except protocol.FrameError as exc:
                header = exc.header
                raise
            t1 = time.perf_counter()
            timings["decode"] = (t1 - t0) * 1e3
            if self.scene is not None:
                points = crop(points, self.scene)
                timings["crop"] = (time.perf_counter() - t1) * 1e3
            det = self.det.detect(points)
            t2 = time.perf_counter()
            regions = anomalous_regions(points, det.point_scores, det.threshold, radius=self.cfg.region_radius) \
                if det.anomalous else []
            timings.update(det.timings_ms, regions=(time.perf_counter() - t2) * 1e3)
        except NotInspected as exc:
            return self._result(header, t_received, timings, error=f"not inspected: {exc}", not_inspected=True)
        except ValueError as exc:
            return self._result(header, t_received, timings, error=str(exc))
        except Exception as exc:  # a bug or backend failure must not stop the line's service
            return self._result(header, t_received, timings, error=f"internal error: {type(exc).__name__}: {exc}")
        timings["total"] = (time.perf_counter() - t0) * 1e3
        return self._result(header, t_received, timings, score=det.score, anomalous=det.anomalous,
                            n_points=len(points), n_invalid=det.n_dropped, regions=regions,
                            point_scores=det.point_scores if self.cfg.point_scores else None)

    def _result(self, header: dict, t_received: float, timings: dict, **fields) -> dict:
        self.result_seq += 1
        return protocol.result(header, result_seq=self.result_seq, t_received=t_received, model=self.model,
                               threshold=self.det.threshold, dropped_frames=self.buffer.dropped, latency_ms=timings,
                               **fields)

    def status(self) -> dict:
        s = self.stats
        with s.lock:
            now = time.time()
            lat = np.array(s.latency_ms) if s.latency_ms else None
            recent = sum(1 for t in s.published if t > now - 5.0)
            window = min(5.0, max(now - s.t0, 1e-3))
            counters = {"frames_in": s.frames_in, "frames_out": s.frames_out, "dropped": self.buffer.dropped,
                        "seq_gaps": s.sequences.gaps, "seq_restarts": s.sequences.restarts, "errors": s.errors,
                        "not_inspected": s.not_inspected, "reconnects": s.reconnects}
            return protocol.status(
                t=now, uptime_s=now - s.t0, counters=counters, fps=recent / window,
                latency_ms={f"p{q}": (float(np.percentile(lat, q)) if lat is not None else None) for q in (50, 95, 99)},
                policy=self.cfg.policy, queue=self.cfg.queue if self.cfg.policy == "every" else 1, model=self.model,
                healthy=self.healthy())
