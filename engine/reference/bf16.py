"""numpy reference of bfloat16 rounding (the truth for the native kernels of crema/bf16.h).

bf16 is the upper 16 bits of a float32, held here in uint16 arrays. float32 -> bf16 rounds to
nearest even, turns denormal inputs into a signed zero and keeps NaN a (quiet) NaN: the rule of
VCVTNE2PS2BF16, which every native row follows bit for bit."""
import numpy as np


def to_bf16(x):
    """uint16 array of bf16(x) for a float32 array x (any shape)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    denormal = (u & 0x7F800000) == 0
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    out = np.where(denormal, (u >> 16) & 0x8000, rounded)
    out = np.where(nan, (u >> 16) | 0x0040, out)
    return out.astype(np.uint16)


def from_bf16(b):
    """float32 array of the bf16 values b (uint16): exact."""
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def round_bf16(x):
    """x rounded to the nearest bf16, as float32."""
    return from_bf16(to_bf16(x))
