"""A Python data layer for semi-supervised training on ExtremeWeather-layout files.

    layer { name: "data" type: "Python" top: "images" top: "boxes" top: "labeled"
            python_param { module: "engine.data.climate.layer" layer: "SemiSupervisedData"
                           param_str: "{'source': 'train.h5', 'stats': 'stats.json',
                                        'labeled_per_batch': 1, 'unlabeled_per_batch': 7}" } }

Every batch holds `labeled_per_batch` images drawn from the file's labeled images followed by
`unlabeled_per_batch` drawn from the others, so each iteration sees the same mix (with 10 %
labeled data and random batches most batches would hold no labeled image at all). The boxes of
unlabeled images are replaced by -1 padding before they leave the layer: training can never see
them. Tops: images (B,16,H,W) normalised per channel, boxes (B,15,5), labeled (B,) 1/0.

param_str keys: source (HDF5 file), stats (a JSON file with per-channel "mean" and "std";
default: computed from the source's images), labeled_per_batch, unlabeled_per_batch (ints),
shuffle (default true in TRAIN, false in TEST: each pool is then read in file order, cycling),
downsample (block-average factor for real 768 x 1152 files, default 1), box_order ("yxyx"),
preload (default false: read each batch from the file; true: hold the normalised images of this
layer's shard in memory, ~0.9 MB per 96 x 144 image, and read no more).
Shuffles draw from a generator spawned from engine.rng's data stream at setup, so a seeded solver
repeats its batches. set_shard(rank, world) keeps the images with index % world == rank.
"""
import ast
import json

import numpy as np

from ... import rng
from ...layer import Layer, TRAIN
from .io import ExtremeWeatherFile, normalize

_KEYS = {"source", "stats", "labeled_per_batch", "unlabeled_per_batch", "shuffle", "downsample",
         "box_order", "preload"}


class _Pool:
    """Indices of one kind of image, visited in (re)shuffled epochs."""

    def __init__(self, indices, shuffle, generator):
        self.indices = np.asarray(indices, np.int64)
        self.shuffle = shuffle
        self.generator = generator
        self.pos = 0
        self.order = self._new_order()

    def _new_order(self):
        return self.generator.permutation(self.indices) if self.shuffle else self.indices.copy()

    def take(self, k):
        out = []
        while len(out) < k:
            if self.pos == len(self.order):
                self.order, self.pos = self._new_order(), 0
            step = min(k - len(out), len(self.order) - self.pos)
            out.extend(self.order[self.pos:self.pos + step])
            self.pos += step
        return np.asarray(out, np.int64)


class SemiSupervisedData(Layer):
    exact_num_bottom = 0
    exact_num_top = 3

    draws_from_data_stream = True

    def setup(self, bottom, top):
        try:
            p = ast.literal_eval(self.param_str or "{}")
        except (ValueError, SyntaxError) as e:
            raise self.error(f"param_str is not a Python dict literal: {e}") from None
        if not isinstance(p, dict) or "source" not in p:
            raise self.error("param_str must be a dict with at least 'source'")
        unknown = sorted(set(p) - _KEYS)
        if unknown:
            raise self.error(f"unknown param_str keys {unknown}; known: {sorted(_KEYS)}")
        self.file = ExtremeWeatherFile(p["source"], p.get("downsample", 1),
                                       p.get("box_order", "yxyx"))
        self.n_lab = int(p.get("labeled_per_batch", 1))
        self.n_unl = int(p.get("unlabeled_per_batch", 0))
        if self.n_lab < 0 or self.n_unl < 0 or self.n_lab + self.n_unl == 0:
            raise self.error(f"batch sizes labeled {self.n_lab} + unlabeled {self.n_unl} must be "
                             "non-negative with a positive sum")
        self.shuffle = bool(p.get("shuffle", self.phase == TRAIN))
        if p.get("stats"):
            with open(p["stats"]) as fh:
                stats = json.load(fh)
        else:
            stats = self.file.channel_stats()
        self.stats = {"mean": np.asarray(stats["mean"]), "std": np.asarray(stats["std"])}
        self._generator = rng.spawn_data_generator()
        self.preload = bool(p.get("preload", False))
        self.rank, self.world_size = 0, 1
        self._make_pools()

    def _make_pools(self):
        mask = self.file.labeled
        mine = np.arange(len(mask)) % self.world_size == self.rank
        lab = np.nonzero(mask & mine)[0]
        unl = np.nonzero(~mask & mine)[0]
        for need, pool, what in ((self.n_lab, lab, "labeled"), (self.n_unl, unl, "unlabeled")):
            if need and not len(pool):
                raise self.error(f"{self.file.path} has no {what} images (for this shard) but "
                                 f"the batch asks for {need}")
        self.pools = (_Pool(lab, self.shuffle, self._generator),
                      _Pool(unl, self.shuffle, self._generator))
        self._memory = None
        if self.preload:
            rows = np.nonzero(mine)[0]
            images, boxes = self.file.read(rows)
            slot = np.full(len(mask), -1, np.int64)
            slot[rows] = np.arange(len(rows))
            self._memory = (slot, normalize(images, self.stats), boxes)

    def set_shard(self, rank, world):
        self.rank, self.world_size = int(rank), int(world)
        self.shard = (self.rank, self.world_size)
        self._make_pools()

    def reshape(self, bottom, top):
        b = self.n_lab + self.n_unl
        top[0].reshape((b,) + self.file.shape)
        top[1].reshape((b,) + self.file.boxes.shape[1:])
        top[2].reshape((b,))

    def forward(self, bottom, top):
        idx = np.concatenate([self.pools[0].take(self.n_lab), self.pools[1].take(self.n_unl)])
        if self._memory is not None:
            slot, images, boxes = self._memory
            top[0].data[...] = images[slot[idx]]
            boxes = boxes[slot[idx]]
        else:
            images, boxes = self.file.read(idx)
            top[0].data[...] = normalize(images, self.stats)
        labeled = np.r_[np.ones(self.n_lab), np.zeros(self.n_unl)]
        boxes[self.n_lab:] = -1.0  # unlabeled: the truth stays hidden from training
        top[1].data[...] = boxes
        top[2].data[...] = labeled
        self.last_indices = idx
