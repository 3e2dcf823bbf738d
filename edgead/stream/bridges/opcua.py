"""``edgead bridge opcua``: the service's results as an OPC UA server (asyncua) that PLCs and SCADA read.

The address space (namespace ``urn:edgead``, string NodeIds; ``docs/plant.md`` has the node set):

- ``Objects/EdgeAD`` with properties ``Plant`` and ``Line``;
- ``EdgeAD/Status``: the service's status (``Healthy`` false when the service is unhealthy or silent);
- ``EdgeAD/Sensors/<sensor>``: the last result of each sensor, with the smart-camera handshake: ``InspectionId``
  (the frame's seq), ``ResultsValid`` (true only for a judged ``ok`` result), ``ResultCount``.

A result is written in one step of the event loop, in this order: ``ResultsValid`` false, the result's values,
``InspectionId``, ``ResultCount``, then ``ResultsValid``; so a Read request sees either the old or the new result,
and a client that still catches a write in progress sees ``ResultsValid`` false. A value a result does not have
(no score on an error, no decision without a threshold, no region on a good part) is written with status
``BadNoData`` (the value is null), never as a number or flag that could pass a part. Variables are read-only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import zmq.asyncio
from asyncua import Server, ua  # the plant extra; edgead.cli names it when it is missing
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions

from edgead.stream.bridges.source import STATUS_COUNTERS, Intake, subscribe
from edgead.stream.metrics import bridge_metrics

NAMESPACE = "urn:edgead"
APPLICATION_URI = "urn:edgead:bridge"  # the server certificate's subjectAltName URI must be this
MAX_SENSORS = 256  # sensor objects the server holds; results of further sensors are dropped (counted)
SECURITY = {
    "none": ua.SecurityPolicyType.NoSecurity,
    "sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "sign-encrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
}
V = ua.VariantType
# in the order a result is written: ResultsValid is also written false first, the handshake goes last
SENSOR_VARIABLES = {
    "Pass": V.Boolean, "Seq": V.UInt64, "FrameId": V.String, "Score": V.Double, "Threshold": V.Double,
    "Anomalous": V.Boolean, "Status": V.String, "Error": V.String, "NotInspected": V.Boolean,
    "RegionCount": V.UInt32, "DefectX": V.Double, "DefectY": V.Double, "DefectZ": V.Double,
    "ModelHash": V.String, "TCapture": V.DateTime, "InspectionId": V.UInt64, "ResultCount": V.UInt64,
    "ResultsValid": V.Boolean,
}
STATUS_VARIABLES = {
    "Healthy": V.Boolean, "Stale": V.Boolean, "Error": V.String, "Fps": V.Double, "UptimeS": V.Double,
    **{"".join(w.title() for w in k.split("_")): V.UInt64 for k in STATUS_COUNTERS},
    "ModelName": V.String, "ModelHash": V.String, "Backend": V.String, "LastStatus": V.DateTime,
}
COUNTER_HELP = {
    "messages": "messages received from the service", "results": "results received from the service",
    "statuses": "status messages received from the service",
    "invalid": "messages from the service that failed the checks (dropped, or shown as error results)",
    "missed": "results the service published that never reached the bridge (result_seq gaps)",
    "service_restarts": "times the service's result_seq started over",
    "dropped": "results not shown: without a sensor id, or for sensors beyond the server's 256",
}
GAUGE_HELP = {"sensors": "sensor objects on the server", "service_up": "1 while the service's status is fresh and "
              "healthy"}


@dataclass
class OpcUaConfig:
    sub: str = "tcp://127.0.0.1:5556"  # the service's result endpoint
    endpoint: str = "opc.tcp://127.0.0.1:4840/edgead/"  # opc.tcp://0.0.0.0:4840/edgead/ for the line's network
    plant: str = ""
    line: str = ""
    security: str = "none"  # none | sign | sign-encrypt (Basic256Sha256); only that mode is offered
    certificate: str | None = None  # the server's application certificate (DER or PEM) and private key (PEM)
    private_key: str | None = None
    trusted_clients: str | None = None  # directory of client certificates (or their CAs) allowed to connect
    status_timeout: float = 5.0  # seconds without a status before the service counts as down
    metrics: str | None = None  # HOST:PORT for /metrics and /healthz
    curve_secret: str | None = None  # the bridge's CURVE key pair, when the service runs CURVE
    curve_server_key: str | None = None

    def __post_init__(self):
        url = urlsplit(self.endpoint)
        if url.scheme != "opc.tcp" or not url.hostname or url.port is None:
            raise ValueError(f"endpoint must be opc.tcp://HOST:PORT/PATH, got {self.endpoint!r}")
        if self.security not in SECURITY:
            raise ValueError(f"security must be one of {', '.join(SECURITY)}, got {self.security!r}")
        if self.security != "none" and not (self.certificate and self.private_key):
            raise ValueError(f"security {self.security} needs the server's --certificate and --private-key")
        if self.trusted_clients and self.security == "none":
            raise ValueError("--trusted-clients needs --security sign or sign-encrypt")

    def loopback(self) -> bool:
        host = urlsplit(self.endpoint).hostname
        try:
            return host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


def _datetime(t: float | None) -> datetime | None:
    try:
        return None if t is None else datetime.fromtimestamp(t, UTC)
    except (OverflowError, OSError, ValueError):  # a finite time no calendar holds
        return None


def sensor_values(result: dict, count: int) -> dict[str, object]:
    """A checked result -> each sensor variable's value; None where the result has no value (written BadNoData)."""
    decided = result["status"] == "ok" and result["anomalous"] is not None
    region = result["regions"][0]["centroid"] if result["regions"] else [None] * 3
    return {
        "Pass": decided and result["anomalous"] is False, "Seq": result["seq"], "FrameId": result["frame_id"],
        "Score": result["score"], "Threshold": result["threshold"], "Anomalous": result["anomalous"],
        "Status": result["status"], "Error": result["error"], "NotInspected": result["not_inspected"],
        "RegionCount": len(result["regions"]), "DefectX": region[0], "DefectY": region[1], "DefectZ": region[2],
        "ModelHash": result["model_hash"], "TCapture": _datetime(result["t_capture"]),
        "InspectionId": result["seq"], "ResultCount": count, "ResultsValid": decided,
    }


def status_values(status: dict) -> dict[str, object]:
    """The status map (maybe a stale one without counters) -> each status variable's value."""
    values = {"Healthy": status["healthy"] and not status["stale"], "Stale": status["stale"],
              "Error": status.get("error", ""), "Fps": status.get("fps"), "UptimeS": status.get("uptime_s"),
              "ModelName": status.get("model_name"), "ModelHash": status.get("model_hash"),
              "Backend": status.get("backend"), "LastStatus": _datetime(status.get("t"))}
    for key in STATUS_COUNTERS:
        values["".join(w.title() for w in key.split("_"))] = status.get(key)
    return values


class OpcUaBridge:
    def __init__(self, cfg: OpcUaConfig):
        self.cfg = cfg
        self.intake = Intake(cfg.status_timeout, "opcua")
        self.sensors: dict[str, int] = {}  # sensor -> results shown
        self.dropped = 0
        self.ready = threading.Event()  # set once the server listens
        self.running = False
        self.metrics = None

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set."""
        if not self.cfg.loopback() and self.cfg.security == "none":
            print(f"edgead bridge opcua: warning: no security on {self.cfg.endpoint}, which is not loopback: any "
                  "client on the network reads the results (docs/plant.md: --security)", file=sys.stderr)
        asyncio.run(self._serve(stop))

    async def _server(self) -> Server:
        server = Server()
        await server.init()
        server.set_endpoint(self.cfg.endpoint)
        server.set_server_name("edgead bridge")
        await server.set_application_uri(APPLICATION_URI)
        server.set_security_policy([SECURITY[self.cfg.security]])
        server.set_identity_tokens([ua.AnonymousIdentityToken])
        if self.cfg.security != "none":
            await server.load_certificate(self.cfg.certificate)
            await server.load_private_key(self.cfg.private_key)
            if self.cfg.trusted_clients:
                if not Path(self.cfg.trusted_clients).is_dir():
                    raise FileNotFoundError(f"{self.cfg.trusted_clients}: no such directory of trusted clients")
                store = TrustStore([Path(self.cfg.trusted_clients)], [])
                await store.load()
                server.set_certificate_validator(CertificateValidator(
                    CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT, store))
        self.idx = await server.register_namespace(NAMESPACE)
        root = await server.nodes.objects.add_object(ua.NodeId("EdgeAD", self.idx), ua.QualifiedName("EdgeAD",
                                                                                                      self.idx))
        for name in ("Plant", "Line"):
            await root.add_property(ua.NodeId(name, self.idx), ua.QualifiedName(name, self.idx),
                                    getattr(self.cfg, name.lower()), varianttype=V.String)
        status = await root.add_object(ua.NodeId("Status", self.idx), ua.QualifiedName("Status", self.idx))
        self.status_nodes = await self._variables(server, status, "Status", STATUS_VARIABLES)
        self.sensors_folder = await root.add_folder(ua.NodeId("Sensors", self.idx),
                                                    ua.QualifiedName("Sensors", self.idx))
        self.sensor_nodes: dict[str, dict[str, ua.NodeId]] = {}
        return server

    async def _variables(self, server: Server, parent, prefix: str, spec: dict) -> dict[str, ua.NodeId]:
        """Read-only variables ``<prefix>.<name>``, waiting for their first value."""
        nodes = {}
        for name, vtype in spec.items():
            initial = {V.Boolean: False, V.String: "", V.Double: 0.0, V.DateTime: datetime.now(UTC)}.get(
                vtype, 0)
            var = await parent.add_variable(ua.NodeId(f"{prefix}.{name}", self.idx),
                                            ua.QualifiedName(name, self.idx), initial, varianttype=vtype)
            nodes[name] = var.nodeid
            await server.write_attribute_value(var.nodeid, ua.DataValue(
                StatusCode=ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData)))
        return nodes

    async def _write(self, server: Server, nodes: dict[str, ua.NodeId], spec: dict, values: dict,
                     source_time: datetime | None) -> None:
        now = datetime.now(UTC)
        for name, value in values.items():
            if value is None:
                dv = ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadNoData), ServerTimestamp=now)
            else:
                value = float(value) if spec[name] == V.Double else value
                dv = ua.DataValue(ua.Variant(value, spec[name]), SourceTimestamp=source_time or now,
                                  ServerTimestamp=now)
            await server.write_attribute_value(nodes[name], dv)

    async def _show_result(self, server: Server, result: dict) -> None:
        sensor = result["sensor"]
        if sensor is None or (sensor not in self.sensors and len(self.sensors) >= MAX_SENSORS):
            self.dropped += 1
            if sensor is not None:
                self.intake.warn(f"result of sensor {sensor!r} not shown: the server holds {MAX_SENSORS} sensors")
            return
        if sensor not in self.sensor_nodes:
            obj = await self.sensors_folder.add_object(ua.NodeId(f"Sensors.{sensor}", self.idx),
                                                       ua.QualifiedName(sensor, self.idx))
            self.sensor_nodes[sensor] = await self._variables(server, obj, f"Sensors.{sensor}", SENSOR_VARIABLES)
            self.sensors[sensor] = 0
        self.sensors[sensor] += 1
        nodes = self.sensor_nodes[sensor]
        # no await below suspends: the server's event loop runs no request until every value is written
        await self._write(server, nodes, SENSOR_VARIABLES, {"ResultsValid": False}, None)
        await self._write(server, nodes, SENSOR_VARIABLES, sensor_values(result, self.sensors[sensor]),
                          _datetime(result["t_capture"]))

    async def _serve(self, stop: threading.Event) -> None:
        server = await self._server()
        ctx = zmq.asyncio.Context()  # the server's event loop also reads the service's messages
        sock = subscribe(ctx, self.cfg.sub, self.cfg.curve_secret, self.cfg.curve_server_key)
        try:
            try:
                await server.start()
            except OSError as exc:
                raise ValueError(f"cannot listen on {self.cfg.endpoint}: {exc}") from None
            try:
                if self.cfg.metrics:
                    self.metrics = bridge_metrics(self.cfg.metrics, self.counters, COUNTER_HELP, GAUGE_HELP,
                                                  lambda: self.running)
                    self.metrics.start()
                self.running = True
                self.ready.set()
                stale = None
                while not stop.is_set():
                    if await sock.poll(100):
                        event = self.intake.accept(await sock.recv_multipart())
                        if event is not None and event[0] == "result":
                            await self._show_result(server, event[1])
                        elif event is not None:
                            await self._show_status(server)
                    now_stale = self.intake.status()["stale"]
                    if now_stale and stale is not True:  # went silent: say so once
                        await self._show_status(server)
                    stale = now_stale
            finally:
                await server.stop()
        finally:
            self.running = False
            sock.close()
            ctx.term()
            if self.metrics is not None:
                self.metrics.close()

    async def _show_status(self, server: Server) -> None:
        status = self.intake.status()
        await self._write(server, self.status_nodes, STATUS_VARIABLES, status_values(status),
                          _datetime(status.get("t")))

    def counters(self) -> dict:
        status = self.intake.status()
        return {**self.intake.counters(), "dropped": self.dropped, "sensors": len(self.sensors),
                "service_up": int(status["healthy"] and not status["stale"])}
