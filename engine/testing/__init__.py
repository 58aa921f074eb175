"""Helpers shared by crema's tests (and usable by anyone writing a layer)."""
from .gradcheck import check_gradient, layer_from_text, run_forward
from .isa import isa_cap

__all__ = ["check_gradient", "isa_cap", "layer_from_text", "run_forward"]
