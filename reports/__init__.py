"""Fidelity measurement, pre-migration risk scan, aggregation and report rendering."""
