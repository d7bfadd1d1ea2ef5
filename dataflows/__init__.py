"""Bytewax dataflows, one module per flow; run with ``python -m bytewax.run dataflows.<name>``."""
