"""Suites, grid runner, transfer matrix, compute curves, speed/memory benches."""
