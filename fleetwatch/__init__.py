"""fleetwatch application glue: settings, logging, the fleet simulator, local brokers, the demo."""
