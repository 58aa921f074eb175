"""Helpers shared by crema's tests (and usable by anyone writing a layer)."""
from .gradcheck import check_gradient, layer_from_text, run_forward

__all__ = ["check_gradient", "layer_from_text", "run_forward"]
