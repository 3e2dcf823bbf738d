"""Streaming: the wire protocol (``protocol``: frames, results and status messages), the service (``service``),
sensors (``sensors``), region finding (``regions``) and CURVE security (``security``).

Imports: pyzmq, msgpack, ``edgead.runtime``, ``edgead.detectors``, ``edgead.formats``, ``edgead.ops``; never torch,
training, export, the CLI or the tools.
"""
