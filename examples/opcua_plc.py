"""What a PLC program does with `edgead bridge opcua`, written in Python (asyncua): the smart-camera handshake.

For each new result of one sensor (``ResultCount`` moved on), read the whole result in one Read request and decide:
the part passes only when ``ResultsValid`` and ``Pass`` are both true. Anything else (a reject, an error, no
decision, a value with a bad status) is a no-go, so a part the detector could not judge is never let through.
Prints one JSON line per result. The node set is in docs/plant.md.

    edgead bridge opcua --sub tcp://127.0.0.1:5556 --endpoint opc.tcp://127.0.0.1:4840/edgead/
    python examples/opcua_plc.py --endpoint opc.tcp://127.0.0.1:4840/edgead/ --sensor cam [--count N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from asyncua import Client, ua

FIELDS = ["ResultCount", "InspectionId", "ResultsValid", "Pass", "Score", "Error", "RegionCount", "DefectX",
          "DefectY", "DefectZ"]


async def plc(endpoint: str, sensor: str, count: int) -> None:
    client = Client(endpoint)
    client.session_timeout = 60_000  # ms: the session ends a minute after the PLC goes away
    async with client:
        idx = await client.get_namespace_index("urn:edgead")
        nodes = [client.get_node(ua.NodeId(f"Sensors.{sensor}.{name}", idx)) for name in FIELDS]
        print(f"opcua_plc: connected to {endpoint}", file=sys.stderr, flush=True)
        seen, last = 0, None
        while not count or seen < count:
            values = await client.read_attributes(nodes)  # one request: one consistent result
            r = {name: dv.Value.Value if dv.StatusCode.is_good() else None  # a bad status counts as no value
                 for name, dv in zip(FIELDS, values, strict=True)}
            if r["ResultCount"] is None or r["ResultCount"] == last:
                await asyncio.sleep(0.02)  # a PLC polls in its cycle, or subscribes to ResultCount
                continue
            last, seen = r["ResultCount"], seen + 1
            go = r["ResultsValid"] is True and r["Pass"] is True
            defect = [r["DefectX"], r["DefectY"], r["DefectZ"]] if r["RegionCount"] else None
            print(json.dumps({"inspection_id": r["InspectionId"], "go": go, "score": r["Score"],
                              "error": r["Error"], "defect_mm": defect}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--endpoint", default="opc.tcp://127.0.0.1:4840/edgead/")
    p.add_argument("--sensor", default="cam", help="the sensor whose results to judge")
    p.add_argument("--count", type=int, default=0, help="exit after this many results (default: run forever)")
    args = p.parse_args()
    asyncio.run(plc(args.endpoint, args.sensor, args.count))


if __name__ == "__main__":
    main()
