"""The development harness: local brokers, a local DynamoDB and e-mail API, the fleet
simulator, the history generator, an MQTT publisher, a Kafka topic monitor, the launcher of
flow processes and the demo.

Used by ``make demo``, the tests and the benchmarks, from the source tree; not installed by
``pip install .`` and not in the production image. It opens sockets of its own (the brokers,
the e-mail receiver's HTTP server, free ports). Nothing outside tests, benchmarks and this
package imports it (tests/unit/test_layers.py).
"""
