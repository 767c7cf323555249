"""Synthetic questions from documents."""
