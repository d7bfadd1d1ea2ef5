"""Reproducible benchmarks, run on one machine: throughput as a ratio to a baseline run side
by side (a bare forwarder, a plain loop, Polars, json), and where no baseline fits, absolute
figures (latency, memory, recovery snapshots, the DynamoDB store). Flows run as processes
(devtools/launcher.py); ``python -m benchmarks`` runs them all."""
