"""SourceData: crema's one batching layer over any Source (engine/data/sources.py)."""
import os

import numpy as np

from .. import rng
from ..data.sharding import ShardedReader
from ..data.sources import BatchReader, SourceError, open_source
from ..layer import Layer, TEST
from ..registry import register_layer


@register_layer("SourceData")
class SourceDataLayer(ShardedReader, Layer):
    """Records of a Source as batches, one top per field.

    source_data_param: source ("hdf5:list.txt", "npz:file.npz" or a registered generator kind),
    batch_size, shuffle (every pass in a new order, the same on every rank), prefetch (batches
    read ahead by a background thread, default 2), field (the field of each top; default the
    tops' names). Tops: (batch_size,) + the field's row shape, float32.
    Sharding (TRAIN: stream position p goes to rank p mod world; TEST reads everything) and the
    resume position (state_dict) belong to the reader: batch t is a pure function of t, the rank
    and the shuffle seed, so a snapshot resumes on exactly the next batch.
    """
    exact_num_bottom = 0
    min_top = 1

    @property
    def draws_from_data_stream(self):
        return bool(self.param.source_data_param.shuffle)

    def setup(self, bottom, top):
        p = self.param.source_data_param
        if not p.source:
            raise self.error("source_data_param source is empty: give kind:argument, e.g. "
                             "hdf5:train.txt")
        if p.batch_size <= 0:
            raise self.error("source_data_param batch_size must be positive")
        fields = list(p.field) or list(self.param.top)
        if len(fields) != len(top):
            raise self.error(f"{len(fields)} fields for {len(top)} tops: give one field per top")
        where = getattr(self, "source", "") or ""
        base_dir = os.path.dirname(os.path.abspath(where.split(":")[0])) if where else None
        try:
            source = open_source(p.source, base_dir)
        except SourceError as exc:
            raise self.error(str(exc)) from None
        missing = [f for f in fields if f not in source.fields]
        if missing:
            raise self.error(f"source '{p.source}' has no field {missing[0]!r} (it has: "
                             f"{', '.join(sorted(source.fields))})")
        seed = int(rng.data_generator().integers(1 << 62)) if p.shuffle else 0
        self.reader = BatchReader(source, p.batch_size, fields, shuffle=p.shuffle, seed=seed,
                                  train=self.phase != TEST, prefetch=p.prefetch)
        for t, f in zip(top, fields):
            t.reshape((int(p.batch_size),) + tuple(source.fields[f]))

    def reshape(self, bottom, top):
        self.kernel = "numpy"  # shapes are fixed in setup

    def forward(self, bottom, top):
        rank, world, _ = self._reading_shard()
        try:
            batch = self.reader.next(rank, world)
        except SourceError as exc:
            raise self.error(str(exc)) from None
        for t, f in zip(top, self.reader.fields):
            t.data[...] = batch[f]

    def state_dict(self):
        return {**self.reader.state_dict(), **self._shard_state()}

    def load_state_dict(self, state):
        self._check_shard_state(state)
        self.reader.load_state_dict(state, error=self.error)
