"""``edgead bridge mqtt``: the service's results and status on an MQTT broker (paho-mqtt 2.x), for MES, SCADA and
IIoT gateways (``docs/plant.md``).

Topics, under ``BASE`` = ``<prefix>[/<plant>/<line>]``:

- ``BASE/<sensor>/result``: each result as JSON (no per-point scores), with ``verdict``, ``plant`` and ``line``
  added; QoS ``--qos``, not retained. Results the service could not attribute to a sensor go to ``BASE/result``.
- ``BASE/status``: the service's status as JSON, retained; when the service goes silent, a status with
  ``healthy: false, stale: true``.
- ``BASE/bridge``: ``online`` (retained) while connected; the broker publishes the last will ``offline`` when the
  bridge goes away, and the bridge publishes it itself when it stops.

While the broker is away, results (QoS 1 and 2) wait in paho's queue, bounded by ``queue``: a result arriving at a
full queue is refused and counted in ``dropped``; paho reconnects with a delay doubling from ``reconnect[0]`` to
``reconnect[1]`` seconds and sends what waited (at least once: a result in flight when the connection broke may
arrive twice). QoS 0 results are not queued: those published while disconnected are dropped and counted.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt  # the plant extra; edgead.cli names it when it is missing
import zmq

from edgead.stream.bridges.source import Intake, jsonable, subscribe, verdict
from edgead.stream.metrics import bridge_metrics

PORTS = {"mqtt": 1883, "mqtts": 8883}
COUNTER_HELP = {
    "messages": "messages received from the service", "results": "results received from the service",
    "statuses": "status messages received from the service",
    "invalid": "messages from the service that failed the checks (dropped, or sent on as error results)",
    "missed": "results the service published that never reached the bridge (result_seq gaps)",
    "service_restarts": "times the service's result_seq started over", "published": "results the broker took",
    "dropped": "results refused at a full queue, or lost at QoS 0 while disconnected",
    "broker_connects": "connections to the broker", "broker_disconnects": "connections to the broker lost",
    "broker_connect_failures": "failed attempts to connect to the broker",
}
GAUGE_HELP = {"queued": "results waiting for the broker", "broker_connected": "1 while connected to the broker",
              "service_up": "1 while the service's status is fresh and healthy"}


def topic_level(text: str) -> str:
    """An id as one MQTT topic level: ``%``, ``/``, ``+`` and ``#`` percent-encoded (reversibly)."""
    return "".join(f"%{ord(c):02X}" if c in "%/+#" else c for c in text)


@dataclass
class MqttConfig:
    sub: str = "tcp://127.0.0.1:5556"  # the service's result endpoint
    broker: str = "mqtt://127.0.0.1:1883"  # mqtt://HOST[:PORT], or mqtts:// for TLS (port 8883)
    prefix: str = "edgead"
    plant: str = ""  # with line: topics under <prefix>/<plant>/<line>
    line: str = ""
    qos: int = 1
    tls: str | None = None  # CA file: TLS with it (mqtts:// without it uses the system's CAs)
    tls_cert: str | None = None  # client certificate and key, for brokers that authenticate clients by certificate
    tls_key: str | None = None
    username: str | None = None
    password_file: str | None = None  # the password, first line of this file (never on the command line)
    client_id: str = ""  # default: edgead-bridge/<topic base>, unique per line on a shared broker
    queue: int = 10_000  # messages waiting for the broker, at most (QoS 1 and 2)
    status_timeout: float = 5.0  # seconds without a status before the service counts as down
    reconnect: tuple[float, float] = (0.5, 30.0)  # broker reconnect delay: first, cap (doubling)
    metrics: str | None = None  # HOST:PORT for /metrics and /healthz
    curve_secret: str | None = None  # the bridge's CURVE key pair, when the service runs CURVE
    curve_server_key: str | None = None

    def __post_init__(self):
        url = urlsplit(self.broker)
        if url.scheme not in PORTS or not url.hostname:
            raise ValueError(f"broker must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got {self.broker!r}")
        self.host, self.port, self.use_tls = url.hostname, url.port or PORTS[url.scheme], url.scheme == "mqtts"
        self.use_tls = self.use_tls or self.tls is not None
        if self.qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {self.qos}")
        if not 1 <= self.queue <= 60_000:  # paho numbers messages in 16 bits
            raise ValueError(f"queue must be 1..60000, got {self.queue}")
        if bool(self.plant) != bool(self.line):
            raise ValueError("give both --plant and --line, or neither")
        for name in ("plant", "line"):
            if topic_level(getattr(self, name)) != getattr(self, name):
                raise ValueError(f"{name} id must not contain %, /, + or #, got {getattr(self, name)!r}")
        if not self.prefix or any(c in self.prefix for c in "+#\0") or self.prefix.strip("/") != self.prefix:
            raise ValueError(f"prefix must be a topic without wildcards or leading/trailing '/', got {self.prefix!r}")
        if self.password_file and not self.username:
            raise ValueError("a password file needs a username (--username)")
        self.base = "/".join(p for p in (self.prefix, self.plant, self.line) if p)
        self.client_id = self.client_id or f"edgead-bridge/{self.base}"


class MqttBridge:
    def __init__(self, cfg: MqttConfig, ctx: zmq.Context | None = None):
        self.cfg, self.ctx = cfg, ctx or zmq.Context.instance()
        self.intake = Intake(cfg.status_timeout, "mqtt")
        self.lock = threading.Lock()  # the counters below: paho's callbacks run in its own thread
        self.counts = dict.fromkeys(("published", "dropped", "broker_connects", "broker_disconnects",
                                     "broker_connect_failures"), 0)
        self.waiting: dict[int, bool] = {}  # message id -> is a result, until the broker has it
        self.early: set[int] = set()  # ids the broker acknowledged before publish() returned
        self.status_payload: bytes | None = None  # the retained status, republished on every connect
        self.broker_down_said = False  # stderr tells when the broker goes away and comes back, not every retry
        self.stopping = False  # our own disconnect is no news
        self.ready = threading.Event()
        self.metrics = None
        self.client = self._client()
        # paho's network loop (connect, reconnect with backoff, resend): in a thread of ours, so its death is seen
        self.loop = threading.Thread(target=self.client.loop_forever, kwargs={"retry_first_connection": True},
                                     name="edgead-mqtt", daemon=True)

    def _client(self) -> mqtt.Client:
        cfg = self.cfg
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cfg.client_id, clean_session=True)
        client.max_queued_messages_set(cfg.queue)
        client.max_inflight_messages_set(32)
        client.reconnect_delay_set(*cfg.reconnect)
        client.will_set(f"{cfg.base}/bridge", "offline", qos=1, retain=True)
        if cfg.use_tls:
            client.tls_set(ca_certs=cfg.tls, certfile=cfg.tls_cert, keyfile=cfg.tls_key)
        if cfg.username:
            password = None
            if cfg.password_file:
                with open(cfg.password_file) as f:
                    password = f.readline().rstrip("\r\n")
            client.username_pw_set(cfg.username, password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_publish = self._on_publish
        return client

    def _publish(self, topic: str, payload: bytes | str, qos: int, retain: bool = False,
                 result: bool = False) -> None:
        """Publish (or queue, while disconnected) and track the message until the broker has it. Called without
        ``self.lock``: paho calls on_publish holding its own lock."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        queued = info.rc == mqtt.MQTT_ERR_SUCCESS or (info.rc == mqtt.MQTT_ERR_NO_CONN and qos > 0)
        with self.lock:
            if not queued:
                self.counts["dropped"] += result
            elif info.mid in self.early:
                self.early.discard(info.mid)
                self.counts["published"] += result
            else:
                self.waiting[info.mid] = result

    # -- paho's thread -----------------------------------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.intake.warn(f"broker {self.cfg.host}:{self.cfg.port} refused the connection: {reason_code}")
            return
        with self.lock:
            self.counts["broker_connects"] += 1
            payload = self.status_payload
        if self.broker_down_said:
            self.intake.warn(f"connected to broker {self.cfg.host}:{self.cfg.port} again")
            self.broker_down_said = False
        self._publish(f"{self.cfg.base}/bridge", "online", qos=1, retain=True)
        if payload is not None:
            self._publish(f"{self.cfg.base}/status", payload, qos=1, retain=True)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self.lock:
            if mid not in self.waiting:
                self.early.add(mid)
            elif self.waiting.pop(mid):
                self.counts["published"] += 1

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self.lock:
            self.counts["broker_disconnects"] += 1
        if not self.stopping:
            self._broker_down(f"lost broker {self.cfg.host}:{self.cfg.port} ({reason_code})")

    def _on_connect_fail(self, client, userdata) -> None:
        with self.lock:
            self.counts["broker_connect_failures"] += 1
        self._broker_down(f"cannot reach broker {self.cfg.host}:{self.cfg.port}")

    def _broker_down(self, what: str) -> None:
        if not self.broker_down_said:
            self.intake.warn(f"{what}; retrying (every {self.cfg.reconnect[1]:g} s at most), results queue up to "
                             f"{self.cfg.queue}")
            self.broker_down_said = True

    # -- the bridge's thread -----------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Bridge until ``stop`` is set; then send what waits (up to 5 s), say ``offline`` and disconnect."""
        sock = subscribe(self.ctx, self.cfg.sub, self.cfg.curve_secret, self.cfg.curve_server_key)
        if self.cfg.metrics:
            try:
                self.metrics = bridge_metrics(self.cfg.metrics, self.counters, COUNTER_HELP, GAUGE_HELP,
                                              self.healthy)
            except ValueError:
                sock.close()
                raise
            self.metrics.start()
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=10)
        self.loop.start()
        self.ready.set()
        stale = None
        try:
            while not stop.is_set():
                if not self.loop.is_alive():
                    raise RuntimeError("the MQTT client thread died")
                if sock.poll(100):
                    event = self.intake.accept(sock.recv_multipart())
                    if event is not None:
                        self._forward(*event)
                status = self.intake.status()
                if status["stale"] and stale is not True:  # went silent: say so once (the status is retained)
                    self._forward("status", status)
                stale = status["stale"]
            deadline = time.monotonic() + 5.0
            while self.counters()["queued"] and self.client.is_connected() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.client.is_connected():
                self.client.publish(f"{self.cfg.base}/bridge", "offline", qos=1, retain=True).wait_for_publish(2)
            if self.counters()["queued"]:
                self.intake.warn(f"stopping with {self.counters()['queued']} results the broker never took")
        finally:
            self.stopping = True
            self.client.disconnect()  # ends paho's loop
            self.loop.join(5)
            sock.close()
            if self.metrics is not None:
                self.metrics.close()

    def _forward(self, kind: str, msg: dict) -> None:
        ids = {"plant": self.cfg.plant, "line": self.cfg.line} if self.cfg.plant else {}
        if kind == "status":
            body = {**jsonable(msg), "stale": msg.get("stale", False), **ids}
            with self.lock:
                self.status_payload = payload = json.dumps(body).encode()
            if self.client.is_connected():  # else on_connect sends the latest
                self._publish(f"{self.cfg.base}/status", payload, qos=1, retain=True)
            return
        topic = f"{self.cfg.base}/{topic_level(msg['sensor'])}/result" if msg["sensor"] else f"{self.cfg.base}/result"
        body = {**jsonable(msg), "verdict": verdict(msg), **ids}
        self._publish(topic, json.dumps(body).encode(), self.cfg.qos, result=True)

    def counters(self) -> dict:
        with self.lock:
            counts = dict(self.counts, queued=sum(self.waiting.values()),
                          broker_connected=int(self.client.is_connected()))
        status = self.intake.status()
        return {**self.intake.counters(), **counts, "service_up": int(status["healthy"] and not status["stale"])}

    def healthy(self) -> bool:
        """The bridge's loops run (the broker and the service may be away: that is what the gauges say)."""
        return self.ready.is_set() and self.loop.is_alive()
