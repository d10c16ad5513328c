"""Evaluation: metrics, benchmark protocols, reports and plots."""
