"""Generate whole splits into ExtremeWeather-layout HDF5 files (see generator and io)."""
import json
import os
from pathlib import Path

import numpy as np

from ...errors import CremaError
from . import generator as G
from . import physics as P
from .io import write_streamed

SPLIT_IDS = {"train": 0, "test": 1, "val": 2}
_LABEL_KEY = 0x4C414245  # "LABE": keeps the labeled-subset draw apart from the image streams


def labeled_mask(n, fraction, seed, split_id):
    """Exactly round(fraction * n) labeled images, chosen by a seeded permutation (the same
    images for the same seed whatever else changes)."""
    if not 0.0 <= fraction <= 1.0:
        raise CremaError(f"labeled fraction must lie in [0, 1], got {fraction}")
    k = int(round(fraction * n))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(split_id), _LABEL_KEY]))
    mask = np.zeros(n, np.uint8)
    mask[rng.permutation(n)[:k]] = 1
    return mask


def _work(job):
    seed, split_id, start, stop, config_json = job
    config = G.Config(**json.loads(config_json))
    grid = P.Grid(config.height, config.width)
    out = [G.generate_image(seed, split_id, i, config, grid) for i in range(start, stop)]
    return start, out


def generate_split(path, n, seed, split, config=None, labeled_fraction=1.0, workers=1,
                   progress=None, chunk=16):
    """Write `n` images of split `split` ("train", "test" or "val") to `path` atomically.
    progress: optional callable(number of images just finished). Returns the path."""
    config = config or G.Config()
    if split not in SPLIT_IDS:
        raise CremaError(f"split must be one of {sorted(SPLIT_IDS)}, got {split!r}")
    split_id = SPLIT_IDS[split]
    grid = P.Grid(config.height, config.width)
    jobs = [(seed, split_id, s, min(s + chunk, n), config.to_json()) for s in range(0, n, chunk)]
    attrs = {"generator_config": config.to_json(), "generator_version": G.GENERATOR_VERSION,
             "seed": int(seed), "split": split,
             "labeled_fraction": float(labeled_fraction),
             "grid": f"{grid.height}x{grid.width} cells of {grid.dlat:g} x {grid.dlon:g} deg, "
                     "centres from -90+dlat/2 north and from dlon/2 east"}

    def fill(f):
        f["labeled"][...] = labeled_mask(n, labeled_fraction, seed, split_id)

        def store(start, results):
            for k, (img, boxes, events) in enumerate(results):
                f["images"][start + k] = img
                f["boxes"][start + k] = boxes
                f["events"][start + k] = json.dumps(events)
            if progress:
                progress(len(results))

        if workers > 1 and len(jobs) > 1:
            import multiprocessing as mp
            with mp.get_context("spawn" if os.name == "nt" else "fork").Pool(workers) as pool:
                for start, results in pool.imap(_work, jobs):
                    store(start, results)
        else:
            for job in jobs:
                store(*_work(job))

    write_streamed(path, n, grid.height, grid.width, fill, attrs=attrs, lat=grid.lat,
                   lon=grid.lon)
    return Path(path)


def generate(out_dir, train=1000, test=200, labeled_fraction=0.1, seed=0, config=None,
             workers=1, progress=None):
    """train.h5 (with `labeled_fraction` of it labeled) and test.h5 (all labeled) in out_dir.
    Returns {"train": path, "test": path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n, fraction in (("train", train, labeled_fraction), ("test", test, 1.0)):
        if n > 0:
            paths[split] = generate_split(out_dir / f"{split}.h5", n, seed, split, config,
                                          fraction, workers, progress)
    return paths
