"""ParamArena: every learnable parameter of a net in one contiguous float32 buffer (and every diff
in another), as Caffe's parallel.cpp lays them out for its collectives.

After a Net is built, each parameter Blob's `data` and `diff` are views into `arena.data` and
`arena.diff`, so that
- the solver's update rules run once over the whole buffer (per-element lr and decay multipliers
  expand the per-parameter ParamSpec values), not once per parameter;
- a gradient allreduce or a parameter-server exchange moves one buffer (or slices of it) with no
  packing or unpacking.

Segments start on 16-float (64-byte) boundaries so that every parameter view is SIMD-aligned; the
gaps are zero in data and diff and have lr and decay multipliers 0, so no update rule ever moves
them (every rule maps a zero gradient with zero state to a zero step).

The solver history uses the same layout (`arena.zeros()`), so that history slice [lo, hi) belongs
to the same parameters as data slice [lo, hi): a parameter server owning a byte range applies the
update rule to that range alone.
"""
import numpy as np

from .errors import NetError

ALIGN = 16  # floats: 64 bytes, one AVX-512 register / cache line


def _aligned(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


class ParamArena:
    """The storage of a net's learnable parameters (see the module docstring).

    Attributes: data, diff (float32, 1-D, `size` elements); offsets[i], counts[i] (the segment of
    parameter i); lr_mult, decay_mult (float32 per element; fixed once built); decays (whether
    any decay_mult is non-zero); blobs (the owners, in net.learnable_params order)."""

    def __init__(self, blobs, lr_mults, decay_mults):
        self.blobs = list(blobs)
        self.counts = [int(b.count) for b in self.blobs]
        self.offsets = []
        size = 0
        for n in self.counts:
            self.offsets.append(size)
            size += _aligned(n)
        self.size = size
        self.data = np.zeros(size, np.float32)
        self.diff = np.zeros(size, np.float32)
        self.lr_mult = np.zeros(size, np.float32)
        self.decay_mult = np.zeros(size, np.float32)
        for blob, off, n, lr, decay in zip(self.blobs, self.offsets, self.counts, lr_mults,
                                           decay_mults):
            if blob.dtype != np.float32:
                raise NetError(f"parameter {blob!r} is {blob.dtype}; the arena holds float32")
            self.data[off:off + n] = blob.data.ravel()
            self.diff[off:off + n] = blob.diff.ravel()
            self.lr_mult[off:off + n] = lr
            self.decay_mult[off:off + n] = decay
            blob.bind(self.data[off:off + n].reshape(blob.shape),
                      self.diff[off:off + n].reshape(blob.shape))
        # whether any parameter has weight decay (the update rules regularize only then); the
        # multipliers are fixed, so this is known once instead of scanned every iteration
        self.decays = bool(self.decay_mult.any())

    def __len__(self):
        return len(self.blobs)

    @property
    def nbytes(self):
        return self.size * 4

    def segment(self, i):
        """(offset, count) of parameter i."""
        return self.offsets[i], self.counts[i]

    def zeros(self):
        """A zeroed float32 buffer laid out like the arena (solver history, send buffers)."""
        return np.zeros(self.size, np.float32)

    def views(self, buffer):
        """Per-parameter views (shaped like the parameters) into a buffer laid out like the arena."""
        return [buffer[off:off + n].reshape(b.shape)
                for b, off, n in zip(self.blobs, self.offsets, self.counts)]

    def layout(self):
        """What a process without the net needs to run the update rules over this arena (a
        parameter server): sizes and per-parameter multipliers, as plain Python values."""
        return {"size": self.size, "offsets": list(self.offsets), "counts": list(self.counts),
                "shapes": [tuple(b.shape) for b in self.blobs],
                "lr_mult": [float(self.lr_mult[o]) if n else 0.0
                            for o, n in zip(self.offsets, self.counts)],
                "decay_mult": [float(self.decay_mult[o]) if n else 0.0
                               for o, n in zip(self.offsets, self.counts)]}

    def byte_balanced_slices(self, parts):
        """Cut [0, size) into `parts` contiguous slices of nearly equal bytes, each boundary on a
        16-float line (parameter boundaries do not matter: the update rules are elementwise).
        IntelCaffe assigns whole blobs round-robin, which puts a large layer on one server; byte
        balance keeps every server equally loaded."""
        return byte_balanced_slices(self.size, parts)


def byte_balanced_slices(size, parts):
    if parts < 1:
        raise ValueError(f"need at least one part, got {parts}")
    lines = size // ALIGN
    bounds = [min(size, (lines * k // parts) * ALIGN) for k in range(parts)] + [size]
    return [(bounds[k], bounds[k + 1]) for k in range(parts)]


class ArenaLayout:
    """The arena's shape without the net (rebuilt from ParamArena.layout() on a parameter server):
    per-element multipliers and the per-parameter views a snapshot needs."""

    def __init__(self, layout):
        self.size = int(layout["size"])
        self.offsets = [int(o) for o in layout["offsets"]]
        self.counts = [int(n) for n in layout["counts"]]
        self.shapes = [tuple(s) for s in layout["shapes"]]
        self.lr_mult = np.zeros(self.size, np.float32)
        self.decay_mult = np.zeros(self.size, np.float32)
        for off, n, lr, decay in zip(self.offsets, self.counts, layout["lr_mult"],
                                     layout["decay_mult"]):
            self.lr_mult[off:off + n] = lr
            self.decay_mult[off:off + n] = decay

    def __len__(self):
        return len(self.counts)

    def zeros(self):
        return np.zeros(self.size, np.float32)

    def views(self, buffer):
        return [buffer[off:off + n].reshape(shape)
                for off, n, shape in zip(self.offsets, self.counts, self.shapes)]
