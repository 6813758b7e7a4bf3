"""Metrics, the classical baseline, synthetic data with ground truth and the sample data."""
