"""The kernel: item model, outcomes, error taxonomy and settings shared by every part.

core imports nothing from the rest of umstieg; everything else may import core.
"""
