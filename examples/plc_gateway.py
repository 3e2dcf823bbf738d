"""A result subscriber as a PLC gateway runs it: edgead results -> a fixed, flat record of integers.

PLCs read fixed registers, not nested maps, so each result becomes one record with scaled integers (mm x 10,
score x 1000) and a status code; the gateway would write it to its fieldbus (Modbus holding registers, a
PROFINET/EtherNet/IP assembly, ...). Here it prints the record as JSON. Needs pyzmq and msgpack only.

    python examples/plc_gateway.py --sub tcp://127.0.0.1:5556 [--sensor cam1] [--count N]
"""

from __future__ import annotations

import argparse
import json
import sys

import msgpack
import zmq

# status codes a ladder program can switch on
OK, REJECT, ERROR, NO_THRESHOLD = 0, 1, 2, 3


def plc_record(result: dict) -> dict[str, int]:
    """One result map (see docs/protocol.md) -> PLC fields, all integers in fixed ranges."""
    if result["status"] != "ok":
        code = ERROR
    elif result["anomalous"] is None:
        code = NO_THRESHOLD
    else:
        code = REJECT if result["anomalous"] else OK
    region = result["regions"][0] if result["regions"] else None
    centre = [round(c * 10) for c in region["centroid"]] if region else [0, 0, 0]
    size = round(max(region["extent"]) * 10) if region else 0
    return {
        "seq": (result["seq"] or 0) & 0xFFFFFFFF,  # the frame's sequence number, to match with the trigger
        "status": code,
        "score_x1000": min(round((result["score"] or 0.0) * 1000), 2**31 - 1),
        "n_regions": len(result["regions"]),
        "defect_x_mm10": centre[0], "defect_y_mm10": centre[1], "defect_z_mm10": centre[2],
        "defect_size_mm10": size,
        "latency_ms": round(result["latency_ms"].get("total", 0.0)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sub", default="tcp://127.0.0.1:5556", help="edgead serve's result endpoint")
    p.add_argument("--sensor", default="", help="only this sensor's results (default: all)")
    p.add_argument("--count", type=int, default=0, help="exit after this many results (default: run forever)")
    args = p.parse_args()
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.subscribe(f"edgead/result/{args.sensor}".encode())
    sock.subscribe(b"edgead/status")  # the service's heartbeat: tells us when we are connected
    sock.connect(args.sub)
    n, alive = 0, False
    while not args.count or n < args.count:
        topic, payload = sock.recv_multipart()
        msg = msgpack.unpackb(payload)
        if topic == b"edgead/status":
            if not alive:
                print(f"plc_gateway: connected; model {msg['model_name']} {msg['model_hash']}", file=sys.stderr,
                      flush=True)
            alive = True
            continue
        print(json.dumps(plc_record(msg)), flush=True)
        n += 1


if __name__ == "__main__":
    main()
