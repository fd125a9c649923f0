"""Synthetic spines with exact ground truth, for tests, the demo model and evaluation (tooling, not inference).

phantom   geometric phantoms: anatomy, fields of view, grids, rendering, BIDS datasets
"""
