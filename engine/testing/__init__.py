"""Helpers shared by crema's tests (and usable by anyone writing a layer)."""
from .gradcheck import check_gradient, layer_from_text, run_forward
from ..kernels import isa_cap  # the one ISA cap: engine.kernels reads CREMA_MAX_ISA once

__all__ = ["check_gradient", "isa_cap", "layer_from_text", "run_forward"]
