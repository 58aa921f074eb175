"""Reading and writing HDF5 files in the ExtremeWeather layout (Racah et al. 2017,
extremeweatherdataset.github.io):

    images  (N, 16, H, W) float32   the CAM5 variables in VARIABLES order (768 x 1152 in the real
                                    data; rows of our generated files run south to north)
    boxes   (N, 15, 5)              ymin, xmin, ymax, xmax, class; unused rows are -1
    labeled (N,) uint8              crema's addition: 1 where the boxes may be used for training

Generated files also carry `events` (N,) JSON strings with every event's parameters, `lat`/`lon`
cell centres and attributes describing the generation (variables, units, classes, config, seed).
Real ExtremeWeather files (climo_YYYY.h5) have only `images` and `boxes`; the loader reads both.
"""
import json
import os

import numpy as np

from ...errors import CremaError
from ...fileio import atomic_write
from .generator import CLASSES, MAX_BOXES, UNITS, VARIABLES

BOX_ORDERS = ("yxyx", "xyxy")


class ExtremeWeatherFile:
    """Lazy reader of one ExtremeWeather-layout HDF5 file.

    path: the file. downsample: an integer factor k > 0; each k x k block of cells is averaged
    (what a k times coarser model grid would hold) and box coordinates are divided by k, so a real
    768 x 1152 file feeds a net built for 96 x 144 with k = 8. box_order: "yxyx" (the dataset
    page's ymin, xmin, ymax, xmax) or "xyxy" (the order one hur-detect comment claims); boxes are
    always returned as ymin, xmin, ymax, xmax, class.
    Use as a context manager, or call close().
    """

    def __init__(self, path, downsample=1, box_order="yxyx"):
        import h5py
        self.path = os.fspath(path)
        if box_order not in BOX_ORDERS:
            raise CremaError(f"box_order must be one of {BOX_ORDERS}, got {box_order!r}")
        self.downsample = int(downsample)
        if self.downsample < 1:
            raise CremaError(f"downsample must be a positive integer, got {downsample}")
        self.box_order = box_order
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as e:
            raise CremaError(f"{self.path}: cannot open as HDF5: {e}") from None
        if "images" not in self._f or "boxes" not in self._f:
            raise CremaError(f"{self.path}: not in the ExtremeWeather layout: needs datasets "
                             f"'images' and 'boxes', found {sorted(self._f.keys())}")
        self.images = self._f["images"]
        self.boxes = self._f["boxes"]
        self._boxes = None
        if self.images.ndim != 4 or self.images.shape[1] != len(VARIABLES):
            raise CremaError(f"{self.path}: 'images' has shape {self.images.shape}; expected "
                             f"(N, {len(VARIABLES)}, H, W)")
        if self.boxes.ndim != 3 or self.boxes.shape[2] != 5 or \
                self.boxes.shape[0] != self.images.shape[0]:
            raise CremaError(f"{self.path}: 'boxes' has shape {self.boxes.shape}; expected "
                             f"({self.images.shape[0]}, K, 5)")
        h, w = self.images.shape[2:]
        if h % self.downsample or w % self.downsample:
            raise CremaError(f"{self.path}: images of {h}x{w} cells cannot be averaged in "
                             f"{self.downsample}x{self.downsample} blocks")
        names = self._f.attrs.get("variables")
        if names is not None:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
            if tuple(names) != VARIABLES:
                raise CremaError(f"{self.path}: channels are {names}, expected {list(VARIABLES)}")

    def __len__(self):
        return int(self.images.shape[0])

    @property
    def shape(self):
        """(16, H, W) after downsampling."""
        h, w = self.images.shape[2:]
        return (len(VARIABLES), h // self.downsample, w // self.downsample)

    @property
    def labeled(self):
        """(N,) bool: the file's `labeled` mask, or all True when it has none (real data)."""
        if "labeled" in self._f:
            return np.asarray(self._f["labeled"]).astype(bool)
        return np.ones(len(self), bool)

    def events(self, index):
        """The generator's event parameters of one image (generated files only)."""
        if "events" not in self._f:
            return None
        raw = self._f["events"][index]
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw)

    def _rows(self, indices):
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, np.int64)
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= len(self))):
            raise CremaError(f"{self.path}: indices out of range [0, {len(self)})")
        return idx

    def read(self, indices=None):
        """(images (n,16,H/k,W/k) float32, boxes (n,15,5) float32) for the given rows."""
        idx = self._rows(indices)
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        # read each distinct row once, in file order, then spread them to the requested order
        uniq, inverse = np.unique(sorted_idx, return_inverse=True)
        k = self.downsample
        imgs = np.empty((len(uniq),) + self.shape, np.float32)
        # plain slab reads over runs of consecutive rows (h5py's point-list selections are far
        # slower), at most 32 images at a time
        runs = np.split(np.arange(len(uniq)), np.nonzero(np.diff(uniq) != 1)[0] + 1)
        for run in runs:
            for lo in range(0, len(run), 32):
                part = run[lo:lo + 32]
                first = int(uniq[part[0]])
                block = self.images[first:first + len(part)]
                if k > 1:
                    n, c, h, w = block.shape
                    block = block.reshape(n, c, h // k, k, w // k, k).mean(axis=(3, 5))
                imgs[part[0]:part[-1] + 1] = block
        if self._boxes is None:  # small (N x 15 x 5): read once
            self._boxes = np.asarray(self.boxes, np.float32)
        boxes = self._boxes[uniq]
        boxes = self._convert_boxes(boxes)
        out_i = np.empty((len(idx),) + self.shape, np.float32)
        out_b = np.empty((len(idx),) + boxes.shape[1:], np.float32)
        out_i[order] = imgs[inverse]
        out_b[order] = boxes[inverse]
        return out_i, out_b

    def _convert_boxes(self, boxes):
        boxes = boxes.copy()
        pad = boxes[..., 4] < 0
        if self.box_order == "xyxy":
            boxes[..., :4] = boxes[..., [1, 0, 3, 2]]
        boxes[..., :4] /= self.downsample
        boxes[pad] = -1.0
        return boxes

    def channel_stats(self, indices=None, chunk=32, zonal=False):
        """Per-channel statistics over the given images (all by default), read in chunks so a
        62-GB year never sits in memory: a dict of float64 arrays mean, std, min, max, each (16,)
        or, with zonal=True, (16, H): one value per channel and latitude row (the zonal-mean
        climatology and the standard deviation about it). Normalise with `normalize`."""
        idx = np.sort(self._rows(indices))
        c, h = len(VARIABLES), self.shape[1]
        rows = h if zonal else 1
        total = np.zeros((c, rows))
        total_sq = np.zeros((c, rows))
        lo = np.full((c, rows), np.inf)
        hi = np.full((c, rows), -np.inf)
        count = 0
        for start in range(0, len(idx), chunk):
            block, _ = self.read(idx[start:start + chunk])
            # (channel, row or 1, everything else)
            flat = block.transpose(1, 2, 0, 3).reshape(c, rows, -1).astype(np.float64)
            # shift by the first chunk's mean: sums of squares stay well conditioned
            if count == 0:
                shift = flat.mean(axis=2)
            d = flat - shift[..., None]
            total += d.sum(axis=2)
            total_sq += (d ** 2).sum(axis=2)
            lo = np.minimum(lo, flat.min(axis=2))
            hi = np.maximum(hi, flat.max(axis=2))
            count += flat.shape[2]
        if count == 0:
            raise CremaError(f"{self.path}: no images to compute statistics from")
        mean_d = total / count
        var = np.maximum(total_sq / count - mean_d ** 2, 0.0)
        out = {"mean": shift + mean_d, "std": np.sqrt(var), "min": lo, "max": hi}
        if not zonal:
            out = {k: v[:, 0] for k, v in out.items()}
        out["variables"] = list(VARIABLES)
        return out

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def load_extremeweather(path, indices=None, downsample=1, box_order="yxyx", stats=True):
    """Read images, boxes and the labeled mask of an ExtremeWeather-layout file.

    Returns a dict: images (n,16,H,W) float32, boxes (n,15,5) float32 (ymin, xmin, ymax, xmax,
    class; -1 rows are padding), labeled (n,) bool, and with stats=True `stats`, the per-channel
    mean/std/min/max of the images read (see ExtremeWeatherFile.channel_stats)."""
    with ExtremeWeatherFile(path, downsample, box_order) as f:
        idx = f._rows(indices)
        images, boxes = f.read(idx)
        out = {"images": images, "boxes": boxes, "labeled": f.labeled[idx]}
    if stats:
        out["stats"] = stats_of(images)
    return out


def stats_of(images):
    """Per-channel mean/std/min/max of an in-memory (n,16,H,W) array."""
    flat = np.asarray(images, np.float64).transpose(1, 0, 2, 3).reshape(images.shape[1], -1)
    return {"mean": flat.mean(axis=1), "std": flat.std(axis=1), "min": flat.min(axis=1),
            "max": flat.max(axis=1), "variables": list(VARIABLES)}


def normalize(images, stats, mode="zscore"):
    """Per-channel normalisation. zscore: (x - mean) / std; minmax: hur-detect's mapping of
    [min, max] onto [-1, 1], (x - mid) / halfrange. Statistics of shape (16,) apply to whole
    channels; of shape (16, H) (channel_stats(zonal=True)) to each latitude row, which turns the
    fields into standardised anomalies from the zonal-mean climatology. A scale below 1 % of
    its channel's median (a constant row or channel) is raised to it (or to 1 when all are 0)."""
    x = np.asarray(images, np.float32)
    if mode == "zscore":
        centre, scale = np.asarray(stats["mean"], np.float64), np.asarray(stats["std"], np.float64)
    elif mode == "minmax":
        lo, hi = np.asarray(stats["min"], np.float64), np.asarray(stats["max"], np.float64)
        centre, scale = (hi + lo) / 2, (hi - lo) / 2
    else:
        raise CremaError(f"normalize: mode must be 'zscore' or 'minmax', got {mode!r}")
    if centre.ndim == 2 and centre.shape[1] != x.shape[2]:
        raise CremaError(f"normalize: zonal statistics for {centre.shape[1]} rows, images have "
                         f"{x.shape[2]}")
    shape = (1, x.shape[1], -1, 1)
    c = x.shape[1]
    floor = 0.01 * np.median(scale.reshape(c, -1), axis=1)
    floor = np.where(floor > 0, floor, 1.0).reshape((c,) + (1,) * (scale.ndim - 1))
    scale = np.maximum(scale, floor)
    return ((x - centre.reshape(shape).astype(np.float32))
            / scale.reshape(shape).astype(np.float32)).astype(np.float32)


def write_extremeweather(path, images, boxes, labeled=None, events=None, attrs=None):
    """Write an in-memory set in the ExtremeWeather layout, atomically (temp file + rename)."""
    images = np.asarray(images, np.float32)
    boxes = np.asarray(boxes, np.float32)
    n = images.shape[0]

    def fill(f):
        f["images"][...] = images
        f["boxes"][...] = boxes
        f["labeled"][...] = np.ones(n, np.uint8) if labeled is None else \
            np.asarray(labeled, np.uint8)
        if events is not None:
            f["events"][...] = [json.dumps(e) for e in events]

    write_streamed(path, n, images.shape[2], images.shape[3], fill, attrs=attrs,
                   with_events=events is not None, box_rows=boxes.shape[1])


def write_streamed(path, n, height, width, fill, attrs=None, with_events=True, box_rows=MAX_BOXES,
                   lat=None, lon=None):
    """Create the layout's datasets in a temp file, let fill(h5file) write them, rename into place.
    Images are chunked one image per chunk (readers take whole images) and not compressed
    (noise-filled floats barely compress, and decompression would slow training reads)."""
    import h5py

    def writer(tmp):
        with h5py.File(tmp, "w") as f:
            f.attrs["note"] = ("generated by crema (engine.data.climate); ExtremeWeather layout; "
                               "do not edit")
            f.attrs["variables"] = np.array(VARIABLES, dtype="S")
            f.attrs["units"] = np.array(UNITS, dtype="S")
            f.attrs["classes"] = np.array(CLASSES, dtype="S")
            f.attrs["box_order"] = "ymin,xmin,ymax,xmax,class (pixels, max exclusive; -1 = none)"
            f.attrs["row_order"] = "south_to_north"
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
            f.create_dataset("images", (n, len(VARIABLES), height, width), np.float32,
                             chunks=(1, len(VARIABLES), height, width) if n else None)
            f.create_dataset("boxes", (n, box_rows, 5), np.float32)
            f.create_dataset("labeled", (n,), np.uint8)
            if with_events:
                f.create_dataset("events", (n,), h5py.string_dtype())
            if lat is not None:
                f["lat"] = lat
                f["lon"] = lon
            fill(f)

    atomic_write(path, writer, what="write the climate data set")
