"""Data: synthetic SAR, scene index, patches."""
from .synthetic import synthetic_sar, reflectivity_map

__all__ = ["synthetic_sar", "reflectivity_map"]
