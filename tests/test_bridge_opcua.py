"""`edgead bridge opcua` with a real service and an independent asyncua client, as a PLC or SCADA would use it:
browse, watch a sensor's InspectionId and Score change, read whole results while they are written, see the service
go silent; and Basic256Sha256 with certificates admitting only trusted clients."""

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import msgpack
from asyncua import Client, ua
from asyncua.crypto.cert_gen import dump_private_key_as_pem, generate_private_key, generate_self_signed_app_certificate
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from stream_helpers import free_port, part, running_service, wait_status

from edgead.stream.bridges.opcua import APPLICATION_URI, NAMESPACE, OpcUaBridge, OpcUaConfig
from edgead.stream.protocol import encode_frame

RESULT = ["InspectionId", "Seq", "FrameId", "ResultsValid", "ResultCount", "Pass", "Score", "Anomalous", "Status",
          "Error", "RegionCount", "DefectX"]


async def connect(url: str, timeout: float = 30.0, client: Client | None = None) -> Client:
    client = client or Client(url)
    deadline = time.monotonic() + timeout
    while True:
        try:
            await client.connect()
            return client
        except (TimeoutError, OSError):
            assert time.monotonic() < deadline, f"no OPC UA server at {url}"
            await asyncio.sleep(0.2)


async def read(client: Client, idx: int, names: list[str], prefix: str) -> dict:
    """One Read request for many variables -> {name: value, or the status code name when it is bad}."""
    nodes = [client.get_node(ua.NodeId(f"{prefix}.{n}", idx)) for n in names]
    values = await client.read_attributes(nodes)
    return {n: dv.Value.Value if dv.StatusCode.is_good() else dv.StatusCode.name for n, dv in zip(names, values,
                                                                                                      strict=True)}


async def wait_for(client, idx, prefix, name, predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = (await read(client, idx, [name], prefix))[name]
            if predicate(value):
                return value
        except ua.UaStatusCodeError:  # the node is not there yet
            pass
        assert time.monotonic() < deadline, f"{prefix}.{name} never matched"
        await asyncio.sleep(0.05)


class Changes:
    """An asyncua subscription handler keeping every data change by variable name."""

    def __init__(self):
        self.seen: dict[str, list] = {}

    def datachange_notification(self, node, value, data):
        self.seen.setdefault(node.nodeid.Identifier.rsplit(".", 1)[1], []).append(value)


def test_a_plc_client_browses_watches_and_never_reads_half_a_result():
    port = free_port()
    url = f"opc.tcp://127.0.0.1:{port}/edgead/"
    header = msgpack.unpackb(encode_frame(part(0), 0, "cam")[1])
    proc = None
    try:
        with running_service(policy="every", queue=64) as (service, sensor, client):
            wait_status(client)
            proc = subprocess.Popen([sys.executable, "-m", "edgead", "bridge", "opcua", "--sub", service.pub_endpoint,
                                     "--endpoint", url, "--plant", "p1", "--line", "l1", "--status-timeout", "1",
                                     "--metrics", "127.0.0.1:0"], env=os.environ, stderr=subprocess.PIPE, text=True)
            metrics = re.search(r"metrics on (http://\S+)/metrics", proc.stderr.readline()).group(1)

            async def plc():
                opc = await connect(url)
                try:
                    idx = await opc.get_namespace_index(NAMESPACE)
                    root = await opc.nodes.objects.get_child(f"{idx}:EdgeAD")
                    names = {(await n.read_browse_name()).Name for n in await root.get_children()}
                    assert names == {"Plant", "Line", "Status", "Sensors"}
                    assert await (await root.get_child(f"{idx}:Line")).read_value() == "l1"
                    await wait_for(opc, idx, "Status", "Healthy", lambda v: v is True)
                    sensor.send_multipart(encode_frame(part(1), 7, "cam"))
                    await wait_for(opc, idx, "Sensors.cam", "InspectionId", lambda v: v == 7)
                    browsed = await (await root.get_child(f"{idx}:Sensors")).get_children()
                    assert [(await n.read_browse_name()).Name for n in browsed] == ["cam"]
                    first = await read(opc, idx, RESULT, "Sensors.cam")
                    changes = Changes()
                    subscription = await opc.create_subscription(20, changes)
                    await subscription.subscribe_data_change(
                        [opc.get_node(ua.NodeId(f"Sensors.cam.{n}", idx)) for n in ("InspectionId", "Score")])
                    sensor.send_multipart(encode_frame(part(2, defect=True), 8, "cam"))
                    await wait_for(opc, idx, "Sensors.cam", "InspectionId", lambda v: v == 8)
                    reject = await read(opc, idx, RESULT, "Sensors.cam")
                    sensor.send_multipart([b"edgead/frame/cam", msgpack.packb({**header, "seq": 9, "dtype": "int16"}),
                                           bytes(12)])
                    await wait_for(opc, idx, "Sensors.cam", "InspectionId", lambda v: v == 9)
                    error = await read(opc, idx, RESULT, "Sensors.cam")
                    await wait_for(opc, idx, "Status", "Errors", lambda v: v == 1)  # the next status counts it
                    status = await read(opc, idx, ["FramesOut", "Errors", "ModelName"], "Status")

                    torn, reads, stop = [], [0], asyncio.Event()

                    async def hammer():  # whole results read while new ones are written
                        while not stop.is_set():
                            r = await read(opc, idx, RESULT, "Sensors.cam")
                            reads[0] += 1
                            if r["ResultsValid"] is True and not (r["Seq"] == r["InspectionId"] and r["FrameId"] ==
                                                                  f"cam-{r['Seq']}" and r["Pass"] is True):
                                torn.append(r)

                    task = asyncio.create_task(hammer())
                    for seq in range(100, 130):
                        sensor.send_multipart(encode_frame(part(seq % 5), seq, "cam"))
                        await asyncio.sleep(0.02)
                    await wait_for(opc, idx, "Sensors.cam", "InspectionId", lambda v: v == 129)
                    stop.set()
                    await task
                    await asyncio.sleep(0.2)  # the last notifications
                    await subscription.delete()
                    return first, reject, error, status, changes.seen, torn, reads[0]
                finally:
                    await opc.disconnect()

            first, reject, error, status, seen, torn, reads = asyncio.run(plc())
            scrape = urllib.request.urlopen(f"{metrics}/metrics").read().decode()
        # the service has stopped: after --status-timeout the bridge says it is down

        async def silent():
            opc = await connect(url)
            try:
                idx = await opc.get_namespace_index(NAMESPACE)
                await wait_for(opc, idx, "Status", "Stale", lambda v: v is True)
                return await read(opc, idx, ["Healthy", "Stale", "Error"], "Status")
            finally:
                await opc.disconnect()

        down = asyncio.run(silent())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert "stopped; 33 results, 0 invalid, 0 missed, 0 dropped" in proc.stderr.read()
    finally:
        if proc is not None:
            proc.kill()
    assert first["Pass"] is True and first["ResultsValid"] is True and first["Anomalous"] is False
    assert first["ResultCount"] == 1 and first["FrameId"] == "cam-7" and first["DefectX"] == "BadNoData"
    assert reject["Pass"] is False and reject["Anomalous"] is True and reject["Score"] > 3.0
    assert reject["RegionCount"] >= 1 and abs(reject["DefectX"] - 8.0) < 1.0 and reject["ResultsValid"] is True
    # an unreadable frame: nothing in it reads as a pass
    assert error["ResultsValid"] is False and error["Pass"] is False and error["Status"] == "error"
    assert error["Score"] == error["Anomalous"] == "BadNoData" and "dtype" in error["Error"]
    assert error["InspectionId"] == 9 and error["ResultCount"] == 3
    assert status["FramesOut"] >= 3 and status["Errors"] == 1 and status["ModelName"] == "template"
    assert seen["InspectionId"][:3] == [7, 8, 9] and seen["InspectionId"][-1] == 129
    assert seen["Score"][1] > 3.0 and seen["Score"][2] is None  # the error result's score: null, BadNoData
    assert reads > 30 and not torn
    assert "edgead_bridge_results_total 33.0" in scrape and "edgead_bridge_service_up 1.0" in scrape
    assert down["Healthy"] is False and down["Stale"] is True and "no status" in down["Error"]


def certificate(tmp_path, name: str, uri: str, usage) -> tuple[str, str]:
    key = generate_private_key()
    cert = generate_self_signed_app_certificate(key, uri, {}, [x509.UniformResourceIdentifier(uri),
                                                               x509.DNSName("localhost")], [usage])
    (tmp_path / f"{name}.der").write_bytes(cert.public_bytes(Encoding.DER))
    (tmp_path / f"{name}.pem").write_bytes(dump_private_key_as_pem(key))
    return str(tmp_path / f"{name}.der"), str(tmp_path / f"{name}.pem")


def test_basic256sha256_admits_trusted_clients_only(tmp_path):
    server_cert, server_key = certificate(tmp_path, "server", APPLICATION_URI, ExtendedKeyUsageOID.SERVER_AUTH)
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    good = certificate(trusted, "plc", "urn:plant:plc", ExtendedKeyUsageOID.CLIENT_AUTH)
    bad = certificate(tmp_path, "intruder", "urn:plant:intruder", ExtendedKeyUsageOID.CLIENT_AUTH)
    (trusted / "plc.pem").rename(tmp_path / "plc.pem")  # only the certificate is trusted; the key stays with the PLC
    good = (good[0], str(tmp_path / "plc.pem"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        unused = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    url = f"opc.tcp://127.0.0.1:{free_port()}/edgead/"
    bridge = OpcUaBridge(OpcUaConfig(sub=unused, endpoint=url, plant="p1", line="l1", security="sign-encrypt",
                                     certificate=server_cert, private_key=server_key, trusted_clients=str(trusted)))
    stop = threading.Event()
    thread = threading.Thread(target=bridge.run, args=(stop,), daemon=True)
    thread.start()

    async def as_client(keys, uri):
        opc = Client(url, timeout=5)
        if keys:
            opc.application_uri = uri
            await opc.set_security(SecurityPolicyBasic256Sha256, keys[0], keys[1], server_certificate=server_cert,
                                   mode=ua.MessageSecurityMode.SignAndEncrypt)
        try:
            await opc.connect()
        except Exception as exc:
            return type(exc).__name__
        try:
            idx = await opc.get_namespace_index(NAMESPACE)
            return await opc.get_node(ua.NodeId("Plant", idx)).read_value()
        finally:
            await opc.disconnect()

    try:
        assert bridge.ready.wait(30)
        assert asyncio.run(as_client(good, "urn:plant:plc")) == "p1"
        refused = [asyncio.run(as_client(bad, "urn:plant:intruder")), asyncio.run(as_client(None, ""))]
    finally:
        stop.set()
        thread.join(15)
    assert refused[0] == "BadCertificateUntrusted" and refused[1] != "p1", refused  # no trust; no None endpoint
