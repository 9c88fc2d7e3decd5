"""Figures a reader trusts: results, charts, trust, version diff, the training report."""
