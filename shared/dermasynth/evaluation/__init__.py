"""Honest evaluation on real images: metrics with confidence intervals, figures, reports."""
