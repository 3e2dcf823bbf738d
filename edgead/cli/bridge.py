"""``edgead bridge opcua|mqtt``: the service's results for plant systems (``docs/plant.md``). The bridges themselves
live in ``edgead/stream/bridges/``; this module is only their command line."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from edgead.stream.bridges.mqtt import MqttBridge, MqttConfig
from edgead.stream.bridges.opcua import OpcUaBridge, OpcUaConfig


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sub", default="tcp://127.0.0.1:5556", help="edgead serve's result endpoint "
                   "(default tcp://127.0.0.1:5556)")
    p.add_argument("--plant", default="", help="plant id (with --line: names this line's results)")
    p.add_argument("--line", default="", help="line id")
    p.add_argument("--status-timeout", type=float, default=5.0, help="seconds without a status from the service "
                   "before it counts as down (default 5)")
    p.add_argument("--metrics", help="HOST:PORT to serve Prometheus /metrics and /healthz on")
    p.add_argument("--curve-secret", help="this bridge's CURVE secret key file, when the service runs CURVE")
    p.add_argument("--curve-server-key", help="the service's CURVE public key file")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="bridge", metavar="BRIDGE", required=True)
    opcua = sub.add_parser("opcua", help="serve results and status as OPC UA variables (asyncua)",
                           description="Serve the service's results and status as OPC UA variables.")
    _common(opcua)
    opcua.add_argument("--endpoint", default="opc.tcp://127.0.0.1:4840/edgead/",
                       help="endpoint to listen on (default opc.tcp://127.0.0.1:4840/edgead/)")
    opcua.add_argument("--security", default="none", choices=("none", "sign", "sign-encrypt"),
                       help="none (default) or Basic256Sha256 sign / sign-encrypt: the only mode offered")
    opcua.add_argument("--certificate", help="the server's application certificate (DER or PEM)")
    opcua.add_argument("--private-key", help="the server's private key (PEM)")
    opcua.add_argument("--trusted-clients", help="directory of client certificates (or CAs) allowed to connect")
    mqtt = sub.add_parser("mqtt", help="publish results and status to an MQTT broker (paho-mqtt)",
                          description="Publish the service's results and status to an MQTT broker.")
    _common(mqtt)
    mqtt.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="mqtt://HOST[:PORT] or mqtts://HOST[:PORT] "
                      "(default mqtt://127.0.0.1:1883)")
    mqtt.add_argument("--prefix", default="edgead", help="topic prefix (default edgead)")
    mqtt.add_argument("--qos", type=int, default=1, choices=(0, 1, 2), help="QoS of results (default 1)")
    mqtt.add_argument("--tls", metavar="CA", help="TLS with this CA file")
    mqtt.add_argument("--tls-cert", help="client certificate (PEM), for brokers that authenticate by certificate")
    mqtt.add_argument("--tls-key", help="the client certificate's key (PEM)")
    mqtt.add_argument("--username", help="broker user name")
    mqtt.add_argument("--password-file", help="file whose first line is the broker password")
    mqtt.add_argument("--client-id", default="", help="MQTT client id (default edgead-bridge/<topic base>)")
    mqtt.add_argument("--queue", type=int, default=10_000, help="results kept while the broker is away "
                      "(default 10000)")


def main(args: argparse.Namespace) -> int:
    common = {k: getattr(args, k) for k in ("sub", "plant", "line", "status_timeout", "metrics", "curve_secret",
                                            "curve_server_key")}
    if args.bridge == "opcua":
        bridge = OpcUaBridge(OpcUaConfig(endpoint=args.endpoint, security=args.security,
                                         certificate=args.certificate, private_key=args.private_key,
                                         trusted_clients=args.trusted_clients, **common))
        where = args.endpoint
    else:
        bridge = MqttBridge(MqttConfig(broker=args.broker, prefix=args.prefix, qos=args.qos, tls=args.tls,
                                       tls_cert=args.tls_cert, tls_key=args.tls_key, username=args.username,
                                       password_file=args.password_file, client_id=args.client_id,
                                       queue=args.queue, **common))
        where = f"{args.broker} under {bridge.cfg.base}/"
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def announce():
        if bridge.ready.wait():
            metrics = f"; metrics on http://{bridge.metrics.address}/metrics" if bridge.metrics else ""
            print(f"edgead bridge {args.bridge}: results from {args.sub} on {where}{metrics}", file=sys.stderr,
                  flush=True)

    threading.Thread(target=announce, daemon=True).start()
    bridge.run(stop)
    c = bridge.counters()
    print(f"edgead bridge {args.bridge}: stopped; {c['results']} results, {c['invalid']} invalid, {c['missed']} "
          f"missed, {c['dropped']} dropped", file=sys.stderr)
    return 0
