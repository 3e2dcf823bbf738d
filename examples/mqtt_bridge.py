"""Bridge edgead results to MQTT, which many PLCs, SCADA and IIoT gateways speak natively (paho-mqtt).

Topics and payloads (``ROOT`` is ``--root``, default ``edgead``):

- ``ROOT/<sensor>/result``: the result as JSON (UTF-8), without the per-point scores; QoS 1, not retained.
- ``ROOT/<sensor>/verdict``: ``"ok"``, ``"reject"``, ``"error"`` or ``"unknown"`` (no threshold); QoS 1, retained,
  so a PLC that (re)connects reads the latest verdict at once.
- ``ROOT/status``: the service status as JSON; QoS 0, retained.

    python examples/mqtt_bridge.py --sub tcp://127.0.0.1:5556 --broker localhost [--port 1883] [--root edgead]
"""

from __future__ import annotations

import argparse
import json

import msgpack
import zmq

STATUS_TOPIC = "edgead/status"


def mqtt_messages(topic: str, msg: dict, root: str = "edgead") -> list[tuple[str, bytes, int, bool]]:
    """One edgead message -> MQTT (topic, payload, qos, retain) tuples."""
    if topic == STATUS_TOPIC:
        return [(f"{root}/status", json.dumps(msg).encode(), 0, True)]
    sensor = msg["sensor"] or "unknown"
    verdict = ("error" if msg["status"] != "ok" else "unknown" if msg["anomalous"] is None
               else "reject" if msg["anomalous"] else "ok")
    body = {k: v for k, v in msg.items() if k != "point_scores"}
    return [(f"{root}/{sensor}/result", json.dumps(body).encode(), 1, False),
            (f"{root}/{sensor}/verdict", verdict.encode(), 1, True)]


def main() -> None:
    import paho.mqtt.client as mqtt

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sub", default="tcp://127.0.0.1:5556", help="edgead serve's result endpoint")
    p.add_argument("--broker", default="localhost")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--root", default="edgead", help="MQTT topic root")
    p.add_argument("--count", type=int, default=0, help="exit after this many results (default: run forever)")
    args = p.parse_args()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="edgead-bridge")
    client.connect(args.broker, args.port)
    client.loop_start()
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.subscribe(b"edgead/")
    sock.connect(args.sub)
    n, infos = 0, []
    try:
        while not args.count or n < args.count:
            topic, payload = sock.recv_multipart()
            topic = topic.decode()
            infos = [client.publish(*m) for m in mqtt_messages(topic, msgpack.unpackb(payload), args.root)]
            n += topic != STATUS_TOPIC
        for info in infos:
            info.wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()


if __name__ == "__main__":
    main()
