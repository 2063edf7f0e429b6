"""Dialogue generation: the shared engine, the sector plug-ins and the run orchestration."""
