"""The experiment layer: grids of runs (sweeps) on one machine or a Ray cluster, their results table, analyses."""
