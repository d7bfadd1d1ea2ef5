"""The development harness: local brokers, a local DynamoDB and e-mail API, the fleet
simulator, the history generator, an MQTT publisher and the demo.

Used by ``make demo``, the tests and the benchmarks, from the source tree; not installed by
``pip install .`` and not in the production image. Nothing outside tests, benchmarks and
this package imports it (tests/unit/test_layers.py).
"""
