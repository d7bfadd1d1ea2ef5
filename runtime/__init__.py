"""What every flow process needs at run time, whatever it does: settings from the
environment, logging, metrics, the clock, graceful shutdown, redaction of secrets, progress.

It imports ``domain`` and third-party libraries only, never ``connectors``, ``dataflows`` or
the operator commands (``fleetwatch``): a test holds the import matrix
(tests/unit/test_layers.py).
"""
