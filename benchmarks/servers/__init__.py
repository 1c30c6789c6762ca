"""Servers the harness starts as real processes (each runs as a script or ``-m`` module)."""
