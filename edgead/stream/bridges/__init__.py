"""Bridges from ``edgead serve``'s ZeroMQ results to what plants already speak: OPC UA (``opcua``) and MQTT
(``mqtt``), run as ``edgead bridge opcua|mqtt`` (``docs/plant.md``). What they share is in ``source``: reading and
checking the service's messages, and the verdict a PLC may act on. Torch-free; asyncua and paho-mqtt are imported
only by the bridge that needs them (extra ``plant``)."""
