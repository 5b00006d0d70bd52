"""Statistics of classifier predictions: metrics with bootstrap intervals, pooled seeds, paired comparisons, figures.

A leaf of the library: it imports nothing of DermaSynth but itself, so every floor above may use it.
"""
