"""Layers that move data without arithmetic: Concat, Slice, Split, Flatten, Reshape, Crop, Tile,
Silence, BatchReindex, Filter.

Caffe makes the tops of Split, Flatten, Reshape (and of Concat with one bottom, Slice with one top)
share memory with the bottom. crema copies instead: forward copies the data, backward copies (or,
for Split, sums) the diffs. The values every layer sees are the same; the only visible difference
is that writing into such a top's data from outside does not change the bottom.
"""
import numpy as np

from ..layer import Layer
from ..registry import register_layer
from .common import canonical_axis


def _legacy_or_axis(layer, p, legacy_name, bottom, what):
    """The axis of Concat/Slice: the legacy *_dim field when set, else the (canonical) axis."""
    has_axis = p.HasField("axis")
    has_legacy = p.HasField(legacy_name)
    if has_axis and has_legacy:
        raise layer.error(f"either {what}.axis or {what}.{legacy_name} may be set, not both")
    if has_legacy:
        dim = int(getattr(p, legacy_name))
        if dim >= bottom.num_axes:
            raise layer.error(f"{what}.{legacy_name} {dim} is out of range for bottom[0] of shape "
                              f"{bottom.shape}")
        return dim
    return canonical_axis(layer, bottom, p.axis, f"{what}.axis")


@register_layer("Concat")
class ConcatLayer(Layer):
    """Joins the bottoms along one axis.

    concat_param: axis (1; negative counts from the end) or the legacy concat_dim (>= 0; used
    when set; setting both is an error). bottoms: same number of axes and the same shape on every
    axis but the concat axis. top[0]: that shape with the sizes on the concat axis summed.
    """
    min_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        axis = _legacy_or_axis(self, self.param.concat_param, "concat_dim", bottom[0],
                               "concat_param")
        ref = bottom[0].shape
        for i, b in enumerate(bottom[1:], start=1):
            if b.num_axes != len(ref):
                raise self.error(f"all bottoms must have the same number of axes: bottom[0] has "
                                 f"shape {ref}, bottom[{i}] has shape {b.shape}")
            for a in range(len(ref)):
                if a != axis and b.shape[a] != ref[a]:
                    raise self.error(
                        f"all bottoms must have the same shape except on the concat axis {axis}: "
                        f"bottom[0] has shape {ref}, bottom[{i}] has shape {b.shape}")
        shape = list(ref)
        shape[axis] = sum(b.shape[axis] for b in bottom)
        top[0].reshape(tuple(shape))
        self.axis = axis
        self.kernel = "numpy"

    def forward(self, bottom, top):
        if len(bottom) == 1:
            top[0].data[...] = bottom[0].data
            return
        np.concatenate([b.data for b in bottom], axis=self.axis, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        start = 0
        for i, b in enumerate(bottom):
            size = b.shape[self.axis]
            if propagate_down[i]:
                index = [slice(None)] * top[0].num_axes
                index[self.axis] = slice(start, start + size)
                b.diff[...] = top[0].diff[tuple(index)]
            start += size


@register_layer("Slice")
class SliceLayer(Layer):
    """Cuts the bottom along one axis into len(top) pieces.

    slice_param: axis (1) or the legacy slice_dim (used when set; both is an error), slice_point
    (len(top) - 1 strictly increasing positions; when absent the axis is split evenly, which the
    number of tops must divide). bottom[0]: any shape; top[i]: the i-th piece.
    """
    exact_num_bottom = 1
    min_top = 1

    def reshape(self, bottom, top):
        p = self.param.slice_param
        axis = _legacy_or_axis(self, p, "slice_dim", bottom[0], "slice_param")
        size = bottom[0].shape[axis]
        points = [int(s) for s in p.slice_point]
        if points:
            if len(points) != len(top) - 1:
                raise self.error(f"slice_param has {len(points)} slice_point value(s); "
                                 f"{len(top)} tops need {len(top) - 1}")
            if len(top) > size:
                raise self.error(f"{len(top)} tops cannot slice axis {axis} of size {size} "
                                 f"(bottom[0] of shape {bottom[0].shape})")
            prev = 0
            for s in points:
                if s <= prev:
                    raise self.error(f"slice_point values must be strictly increasing and "
                                     f"positive, got {points}")
                prev = s
            if points[-1] > size:
                raise self.error(f"slice_point {points[-1]} is past the end of axis {axis} of "
                                 f"size {size} (bottom[0] of shape {bottom[0].shape})")
            bounds = [0] + points + [size]
        else:
            if size % len(top):
                raise self.error(f"the number of tops ({len(top)}) must evenly divide the size "
                                 f"{size} of slice axis {axis} (bottom[0] of shape "
                                 f"{bottom[0].shape})")
            step = size // len(top)
            bounds = [step * i for i in range(len(top) + 1)]
        self.axis = axis
        self.bounds = bounds
        for i, t in enumerate(top):
            shape = list(bottom[0].shape)
            shape[axis] = bounds[i + 1] - bounds[i]
            t.reshape(tuple(shape))
        self.kernel = "numpy"

    def _index(self, i, ndim):
        index = [slice(None)] * ndim
        index[self.axis] = slice(self.bounds[i], self.bounds[i + 1])
        return tuple(index)

    def forward(self, bottom, top):
        for i, t in enumerate(top):
            t.data[...] = bottom[0].data[self._index(i, bottom[0].num_axes)]

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        for i, t in enumerate(top):
            bottom[0].diff[self._index(i, bottom[0].num_axes)] = t.diff


@register_layer("Split")
class SplitLayer(Layer):
    """Feeds one bottom to several consumers (the net inserts it where a blob has several).

    No parameters. bottom[0]: any shape; every top: the same data. Backward sums the top diffs.
    Not allowed in place.
    """
    exact_num_bottom = 1
    min_top = 1

    def reshape(self, bottom, top):
        for i, t in enumerate(top):
            if t is bottom[0]:
                raise self.error(f"top[{i}] is the bottom: Split does not work in place")
            t.reshape(bottom[0].shape)
        self.kernel = "numpy"

    def forward(self, bottom, top):
        for t in top:
            t.data[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        acc = bottom[0].diff
        acc[...] = top[0].diff
        for t in top[1:]:
            acc += t.diff


@register_layer("Flatten")
class FlattenLayer(Layer):
    """Merges the axes axis..end_axis (inclusive) into one.

    flatten_param: axis (1), end_axis (-1). bottom[0]: any shape; top[0]:
    shape[:axis] + (count(axis:end_axis+1),) + shape[end_axis+1:]. Not allowed in place.
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        if top[0] is bottom[0]:
            raise self.error("Flatten does not work in place")
        p = self.param.flatten_param
        start = canonical_axis(self, bottom[0], p.axis, "flatten_param.axis")
        end = canonical_axis(self, bottom[0], p.end_axis, "flatten_param.end_axis")
        if end < start:
            raise self.error(f"flatten_param.end_axis ({p.end_axis} -> {end}) comes before axis "
                             f"({p.axis} -> {start}) for bottom[0] of shape {bottom[0].shape}")
        shape = bottom[0].shape
        top[0].reshape(tuple(shape[:start]) + (bottom[0].count_range(start, end + 1),)
                       + tuple(shape[end + 1:]))
        self.kernel = "numpy"

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff.reshape(bottom[0].shape)


@register_layer("Reshape")
class ReshapeLayer(Layer):
    """Changes the shape of a range of axes without touching the data.

    reshape_param: shape (the new dims: 0 copies the bottom's dim at that position, -1 is
    inferred from the count, at most one -1), axis (0; where the replaced range starts, negative
    counts from the end with -1 meaning "after the last axis"), num_axes (-1: all axes from axis
    on; otherwise the number of bottom axes replaced). bottom[0]: any shape; top[0]:
    shape[:axis] + new dims + shape[axis+num_axes:] with the same count. Not allowed in place.
    Caffe's top shares the bottom's memory; crema copies (see the module docstring).
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        if top[0] is bottom[0]:
            raise self.error("Reshape does not work in place")
        dims = [int(d) for d in self.param.reshape_param.shape.dim]
        self.dims = dims
        self.copy_axes = [i for i, d in enumerate(dims) if d == 0]
        inferred = [i for i, d in enumerate(dims) if d == -1]
        if len(inferred) > 1:
            raise self.error(f"reshape_param.shape {dims} has {len(inferred)} values of -1; "
                             "at most one dim may be inferred")
        if any(d < -1 for d in dims):
            raise self.error(f"reshape_param.shape {dims} has a dim below -1")
        self.inferred_axis = inferred[0] if inferred else -1
        self.constant_count = int(np.prod([d for d in dims if d > 0], dtype=np.int64))

    def reshape(self, bottom, top):
        if top[0] is bottom[0]:
            raise self.error("Reshape does not work in place")
        p = self.param.reshape_param
        b_shape = bottom[0].shape
        n_axes = len(b_shape)
        start = p.axis if p.axis >= 0 else n_axes + p.axis + 1
        if not 0 <= start <= n_axes:
            raise self.error(f"reshape_param.axis {p.axis} is out of range for bottom[0] of "
                             f"shape {b_shape}")
        if p.num_axes < -1:
            raise self.error(f"reshape_param.num_axes must be >= 0, or -1 for all; got "
                             f"{p.num_axes}")
        end = n_axes if p.num_axes == -1 else start + p.num_axes
        if end > n_axes:
            raise self.error(f"reshape_param.axis + num_axes = {start} + {p.num_axes} is out of "
                             f"range for bottom[0] of shape {b_shape}")
        new = list(self.dims)
        for i in self.copy_axes:
            if start + i >= n_axes:
                raise self.error(f"reshape_param.shape {self.dims} has a 0 at position {i}, but "
                                 f"bottom[0] of shape {b_shape} has no axis {start + i} to copy")
            new[i] = b_shape[start + i]
        count = bottom[0].count
        if self.inferred_axis >= 0:
            explicit = (self.constant_count * bottom[0].count_range(0, start)
                        * bottom[0].count_range(end))
            for i in self.copy_axes:
                explicit *= new[i]
            if explicit == 0 or count % explicit:
                raise self.error(f"cannot infer the -1 dim of reshape_param.shape {self.dims}: "
                                 f"bottom[0] of shape {b_shape} has count {count}, not divisible "
                                 f"by the product of the other dims ({explicit})")
            new[self.inferred_axis] = count // explicit
        shape = tuple(b_shape[:start]) + tuple(new) + tuple(b_shape[end:])
        if int(np.prod(shape, dtype=np.int64)) != count:
            raise self.error(f"output count must match input count: bottom[0] of shape "
                             f"{b_shape} (count {count}) cannot become shape {shape} "
                             f"(count {int(np.prod(shape, dtype=np.int64))})")
        top[0].reshape(shape)
        self.kernel = "numpy"

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff.reshape(bottom[0].shape)


@register_layer("Crop")
class CropLayer(Layer):
    """Crops bottom[0] to the shape of bottom[1] on the axes from `axis` on.

    crop_param: axis (2), offset (none: 0 everywhere; one value: used for every cropped axis;
    otherwise one per cropped axis). bottom[0]: the blob to crop; bottom[1]: only its shape is
    read (same number of axes). top[0]: bottom[0].shape[:axis] + bottom[1].shape[axis:].
    Backward writes the top diff into the cropped window of bottom[0] and zeros elsewhere;
    bottom[1] gets a zero diff (its values do not affect the output).
    """
    exact_num_bottom = 2
    exact_num_top = 1

    def reshape(self, bottom, top):
        p = self.param.crop_param
        a, b = bottom[0], bottom[1]
        if a.num_axes != b.num_axes:
            raise self.error(f"bottoms must have the same number of axes: bottom[0] has shape "
                             f"{a.shape}, bottom[1] has shape {b.shape}")
        start = canonical_axis(self, a, p.axis, "crop_param.axis")
        offsets = [int(o) for o in p.offset]
        if len(offsets) > 1 and start + len(offsets) != a.num_axes:
            raise self.error(f"crop_param has {len(offsets)} offsets; axis {start} of a "
                             f"{a.num_axes}-axis bottom needs 1 or {a.num_axes - start}")
        shape, index = [], []
        for i in range(a.num_axes):
            off, size = 0, a.shape[i]
            if i >= start:
                size = b.shape[i]
                if len(offsets) == 1:
                    off = offsets[0]
                elif offsets:
                    off = offsets[i - start]
                if a.shape[i] - off < size:
                    raise self.error(f"the crop of axis {i} is out of bounds: size {size} at "
                                     f"offset {off} does not fit bottom[0] of shape {a.shape} "
                                     f"(bottom[1] has shape {b.shape})")
            shape.append(size)
            index.append(slice(off, off + size))
        self.index = tuple(index)
        top[0].reshape(tuple(shape))
        self.kernel = "numpy"

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data[self.index]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 0
            bottom[0].diff[self.index] = top[0].diff
        if propagate_down[1]:
            bottom[1].diff[...] = 0


@register_layer("Tile")
class TileLayer(Layer):
    """Repeats the bottom `tiles` times along one axis (whole blocks of count(axis:) values).

    tile_param: axis (1), tiles (required, > 0). bottom[0]: any shape; top[0]: the same with
    shape[axis] multiplied by tiles. Backward sums the diffs of the copies.
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        p = self.param.tile_param
        axis = canonical_axis(self, bottom[0], p.axis, "tile_param.axis")
        if not p.HasField("tiles"):
            raise self.error("tile_param.tiles must be specified")
        if p.tiles <= 0:
            raise self.error(f"tile_param.tiles must be positive, got {p.tiles}")
        self.tiles = int(p.tiles)
        self.outer = bottom[0].count_range(0, axis)
        self.inner = bottom[0].count_range(axis)
        shape = list(bottom[0].shape)
        shape[axis] *= self.tiles
        top[0].reshape(tuple(shape))
        self.kernel = "numpy"

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.outer, 1, self.inner)
        top[0].data.reshape(self.outer, self.tiles, self.inner)[...] = x

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dy = top[0].diff.reshape(self.outer, self.tiles, self.inner)
            bottom[0].diff[...] = dy.sum(axis=1).reshape(bottom[0].shape)


@register_layer("Silence")
class SilenceLayer(Layer):
    """Consumes blobs so that they are not reported as net outputs. Any number of bottoms, no
    tops; backward zeros the bottom diffs that are asked for."""
    min_bottom = 1
    exact_num_top = 0

    def reshape(self, bottom, top):
        self.kernel = "numpy"

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        for i, b in enumerate(bottom):
            if propagate_down[i]:
                b.diff[...] = 0


@register_layer("BatchReindex")
class BatchReindexLayer(Layer):
    """Picks items of bottom[0] along axis 0: top[k] = bottom[0][bottom[1][k]].

    No parameters. bottom[0]: (N, ...); bottom[1]: (M,) indices in [0, N) (truncated to integers,
    as Caffe's cast); top[0]: (M, ...). Backward adds each top item's diff into the item it came
    from (repeated indices add up); no gradient to the indices.
    """
    exact_num_bottom = 2
    exact_num_top = 1

    def reshape(self, bottom, top):
        if bottom[1].num_axes != 1:
            raise self.error(f"bottom[1] (the indices) must have one axis, got shape "
                             f"{bottom[1].shape}")
        top[0].reshape((bottom[1].shape[0],) + tuple(bottom[0].shape[1:]))
        self.kernel = "numpy"

    def _indices(self, bottom):
        idx = bottom[1].data.astype(np.int64)
        n = bottom[0].shape[0] if bottom[0].num_axes else 1
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            bad = idx[(idx < 0) | (idx >= n)][0]
            raise self.error(f"index {bad} in bottom[1] is outside [0, {n}) for bottom[0] of "
                             f"shape {bottom[0].shape}")
        return idx

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data[self._indices(bottom)]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("cannot backpropagate to bottom[1] (the indices)")
        if propagate_down[0]:
            bottom[0].diff[...] = 0
            np.add.at(bottom[0].diff, self._indices(bottom), top[0].diff)

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1


@register_layer("Filter")
class FilterLayer(Layer):
    """Keeps the items (along axis 0) whose selector value is nonzero.

    No parameters. bottoms: K blobs to filter, then the selector (N, 1, 1, ...) as the last
    bottom; every filtered bottom has N items. tops: K blobs, top[i] = the kept items of
    bottom[i], shape (kept, ...) (kept may be 0). The number of kept items depends on the
    selector's data, so forward re-shapes the tops (Caffe's first reshape, before any data,
    gives N items). Backward puts each top diff back at the kept positions, zeros elsewhere;
    there is no gradient to the selector.
    """
    min_bottom = 2
    min_top = 1

    def setup(self, bottom, top):
        if len(top) != len(bottom) - 1:
            raise self.error(f"Filter needs one top per filtered bottom: {len(bottom)} bottoms "
                             f"(the last is the selector) need {len(bottom) - 1} tops, got "
                             f"{len(top)}")
        self._n_bottom = len(bottom)
        self.first_reshape = True

    def _selected(self, bottom):
        sel = bottom[-1]
        if sel.num_axes < 1:
            raise self.error(f"the selector (bottom[{len(bottom) - 1}]) needs an item axis, got "
                             f"shape {sel.shape}")
        if any(d != 1 for d in sel.shape[1:]):
            raise self.error(f"the selector (bottom[{len(bottom) - 1}]) must have shape (N, 1, "
                             f"...), got {sel.shape}")
        for i, b in enumerate(bottom[:-1]):
            if b.num_axes < 1 or b.shape[0] != sel.shape[0]:
                raise self.error(f"bottom[{i}] of shape {b.shape} must have the selector's "
                                 f"{sel.shape[0]} items (selector shape {sel.shape})")
        return np.flatnonzero(sel.data.reshape(-1) != 0)

    def _shape_tops(self, bottom, top, n):
        for b, t in zip(bottom[:-1], top):
            t.reshape((n,) + tuple(b.shape[1:]))

    def reshape(self, bottom, top):
        self.indices = self._selected(bottom)
        n = len(self.indices)
        if self.first_reshape:
            # As Caffe: before any data is loaded, the tops get every item.
            n = bottom[-1].shape[0]
            self.first_reshape = False
        self._shape_tops(bottom, top, n)
        self.kernel = "numpy"

    def forward(self, bottom, top):
        self.indices = self._selected(bottom)
        self._shape_tops(bottom, top, len(self.indices))
        for b, t in zip(bottom[:-1], top):
            t.data[...] = b.data[self.indices]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[len(bottom) - 1]:
            raise self.error("cannot backpropagate to the selector (the last bottom)")
        for i, t in enumerate(top):
            if propagate_down[i]:
                bottom[i].diff[...] = 0
                bottom[i].diff[self.indices] = t.diff

    def allow_force_backward(self, bottom_index):
        # The selector is the last bottom; count the bottoms from the prototxt (or from setup).
        n_bottom = len(self.param.bottom) or getattr(self, "_n_bottom", 0)
        return not n_bottom or bottom_index < n_bottom - 1
