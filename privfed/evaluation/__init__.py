"""Evaluation: per-client metrics, privacy-utility sweeps and reports."""
