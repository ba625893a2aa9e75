"""Evaluation: metrics in the benchmark domain and traditional-codec baselines."""
