"""Docstring → body: find the stub (LSP line split), generate candidates, rank best of N."""
