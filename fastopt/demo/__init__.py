"""``python -m fastopt demo``: every rule training a real network, and a figure."""
