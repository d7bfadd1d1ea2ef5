"""fleetwatch's operator commands: what operators run by hand, beside the flows.

``python -m fleetwatch.topics`` (create the topics), ``python -m fleetwatch.recovery_layout``
(lay out and rebalance recovery partitions), ``python -m fleetwatch.replay`` (replay dead
letters), ``python -m fleetwatch.rules check`` (validate a rule catalogue) and
``python -m fleetwatch.whatif`` (replay the lake under a candidate catalogue and report what
would change) and ``python -m fleetwatch.history refresh`` (recompute the drivers' 90-day
figures from the lake). They build on ``runtime`` and ``connectors``; the image ships them
with the flows.
"""
