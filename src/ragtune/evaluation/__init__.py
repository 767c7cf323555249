"""Evaluation: metrics now; strategies, comparison and the report come with the comparison issue."""
