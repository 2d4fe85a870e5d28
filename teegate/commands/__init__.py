"""Click command modules, one per command group, loaded lazily by teegate.cli."""
