"""The flows' I/O: MQTT, Kafka, HTTP (the e-mail API), DynamoDB, PostgreSQL, and the files
they stream to or from (the Parquet lake, the driver history, JSON lines).

Of what production runs, the only package that opens sockets: the operator commands
(``fleetwatch``) reach Kafka through it. Files are not all here: a flow reads its own
start-up files (the notifier's routes) and ``fleetwatch.recovery_layout`` moves Bytewax's
recovery files. The development harness (``devtools``) opens sockets of its own (local
brokers, the e-mail receiver's HTTP server). It imports ``domain`` and ``runtime``, never
``dataflows``, ``fleetwatch`` or ``devtools`` (tests/unit/test_layers.py).
"""
