"""Offline evaluation: HumanEval pass@k in a sandbox, prompt perturbations, contamination checks.

Nothing here is imported by the server; the CLI imports the submodules on demand.
"""
