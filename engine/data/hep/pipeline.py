"""Reproducible, parallel generation of the HEP benchmark data set: `generate(...)`.

Plan. The requested events are cut into fixed-size *blocks* per process (the signal, then each
QCD p^T_hat slice). Block b of process p always holds the same `block_size` accepted events: its
Pythia seed, its pile-up seed and its detector random stream all derive from
``SeedSequence(seed, spawn_key=(p, b))``. A block is the unit of work, so the data depend on the
seed and the block size only, never on how many worker processes or MPI ranks ran the blocks or in
which order they finished.

Splits. Every event of the plan has a fixed (split, row) drawn from the seed before generation
starts: per class (signal, background) the events are divided between the splits in the requested
fractions (largest-remainder rounding, so each split has the same signal/background mix), then the
rows of each split are shuffled. Blocks write each of their events straight to its row.

Preselection. Only events passing the preselection are kept ("accepted"); the events Pythia
generated for a process, accepted or not, are the denominator of its cross-section weight.
``baseline`` (default) keeps the ATLAS baseline (>= 3 large-R jets, leading jet > 440 GeV), the
phase space in which the RPV search and its signal regions live, ``trigger`` keeps a leading jet
> 440 GeV (the large-R jet trigger plateau) and ``none`` keeps everything. Measured with this
generator (seed 3, 60 kept events per slice, default slices): the baseline keeps 0.21 % of the QCD
events with 200 < p^T_hat < 400 GeV, 7.6 % at 400-700, 22 % at 700-1000, ~20 % above, and 97 % of
the signal. Weighted by cross section, the 200-400 and 400-700 GeV slices carry 42 % and 51 % of
the baseline QCD rate, so the lowest slice cannot be dropped, although it costs ~470 generated
events per kept one and dominates the generation time with equal shares per slice
(`slice_fractions` moves events between slices; the weights stay correct).

Parallelism. ``workers > 1`` runs blocks in a `multiprocessing` pool (spawned processes, each with
its own Pythia instances). Under MPI (mpi4py importable, launched by mpirun/srun, more than one
rank) each rank runs the blocks with index = rank (mod size) in-process and sends them to rank 0,
which writes the files; every rank returns the same paths.
"""
import json
import multiprocessing
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field

import numpy as np

from ...errors import CremaError
from . import cuts, events, jets, writer
from .detector import IMAGE_ETA_RANGE, Detector

PRESELECTIONS = ("none", "trigger", "baseline")
DEFAULT_SPLIT = {"train": 0.7, "val": 0.1, "test": 0.2}
DEFAULT_BLOCK_SIZE = 50
#: spawn_key of the split assignment: any tuple that no (process, block) key can equal.
_SPLIT_KEY = (2 ** 31 - 1, 0, 0)
_MPI_ENV = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE",
            "MPI_LOCALNRANKS")
_TAG_RESULT = 7301


@dataclass(frozen=True)
class Task:
    """Block `block` of `process`: `n_events` accepted events, the first at plan index `offset`."""
    process: events.Process
    block: int
    n_events: int
    offset: int


@dataclass(frozen=True)
class WorkerConfig:
    seed: int
    sizes: tuple
    pileup: float = 0.0
    preselection: str = "baseline"
    detector: Detector = field(default_factory=Detector)
    max_tries_per_event: int = 20000


def block_seeds(seed, code, block):
    """(Pythia seed, pile-up Pythia seed, detector numpy Generator) of block `block` of the
    process with code `code`."""
    root = np.random.SeedSequence(int(seed), spawn_key=(int(code), int(block)))
    main, pileup, det = root.spawn(3)
    return (events.pythia_seed(main.generate_state(1)[0]),
            events.pythia_seed(pileup.generate_state(1)[0]),
            np.random.default_rng(det))


def passes_preselection(feats, flags, kind):
    if kind == "none":
        return True
    if kind == "trigger":
        return feats["lead_pt"] > cuts.BASELINE_LEAD_PT_MIN
    if kind == "baseline":
        return bool(flags["baseline"])
    raise CremaError(f"unknown preselection '{kind}' (known: {', '.join(PRESELECTIONS)})")


def _feature_columns():
    return {name: np.zeros(0, dtype) for name, dtype in writer.COLUMNS.items()
            if name not in ("weight", "normweight", "label", "event_id")}


def run_block(task, cfg):
    """Generate one block (see the module docstring); returns a dict of numpy arrays and counts
    that pickles cheaply: images per size {n,3,s,s}, per-event columns, jets {n,8,4}."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    n = int(task.n_events)
    seed_main, seed_pu, rng = block_seeds(cfg.seed, task.process.code, task.block)
    source = events.PythiaSource(task.process, seed_main)
    pileup = events.PileUp(cfg.pileup, seed_pu)
    det = cfg.detector
    images = {s: np.zeros((n, 3, s, s), np.float32) for s in cfg.sizes}
    cols = {name: np.zeros(n, arr.dtype) for name, arr in _feature_columns().items()}
    jet_table = np.zeros((n, writer.MAX_JETS, 4), np.float32)
    limit = max(1000, int(cfg.max_tries_per_event) * n)
    accepted = 0
    while accepted < n:
        if source.n_generated >= limit:
            raise CremaError(
                f"{task.process.name}: only {accepted} of {n} events passed the "
                f"'{cfg.preselection}' preselection in {source.n_generated} generated events; "
                "choose other p^T_hat slices or a looser preselection")
        particles = source.next()
        pthat = source.pthat()
        particles = pileup.overlay(particles, rng)
        resp = det.simulate(particles, rng)
        fat = jets.cluster(resp.tower_e, resp.tower_eta, resp.tower_phi)
        feats = cuts.event_features(fat[:, 0], fat[:, 1], fat[:, 3])
        flags = cuts.rpv_cuts(feats["njet"], feats["lead_pt"], feats["deta12"], feats["msum"])
        if not passes_preselection(feats, flags, cfg.preselection):
            continue
        i = accepted
        for s in cfg.sizes:
            images[s][i] = resp.image(s)
        for k in cuts.FEATURES:
            cols[k][i] = feats[k]
        for k, v in flags.items():
            cols[k][i] = int(v)
        cols["n_tracks"][i] = int(np.count_nonzero(np.abs(resp.track_eta) < IMAGE_ETA_RANGE))
        cols["calo_e"][i] = float(resp.tower_e[np.abs(resp.tower_eta) < IMAGE_ETA_RANGE].sum())
        cols["pthat"][i] = pthat
        cols["process"][i] = task.process.code
        m = min(len(fat), writer.MAX_JETS)
        jet_table[i, :m] = fat[:m]
        accepted += 1
    return {"code": task.process.code, "block": task.block, "offset": task.offset, "n": n,
            "images": images, "columns": cols, "jets": jet_table,
            "n_generated": source.n_generated, "sigma_pb": source.sigma_pb(),
            "sigma_err_pb": source.sigma_err_pb(), "pileup_events": pileup.n_overlaid,
            "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - cpu0,
            "pid": os.getpid()}


def _run_block_args(args):
    return run_block(*args)


def split_counts(n, fractions):
    """Largest-remainder rounding of n * fractions (ties go to the earlier split)."""
    f = np.asarray(fractions, dtype=np.float64)
    raw = n * f
    counts = np.floor(raw).astype(np.int64)
    rest = int(n - counts.sum())
    order = sorted(range(len(f)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[:rest]:
        counts[i] += 1
    return counts


def assign_splits(labels, fractions, seed):
    """(split index, row) of every event of the plan; see the module docstring."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=_SPLIT_KEY))
    split_of = np.full(len(labels), -1, np.int64)
    for cls in (1, 0):
        ids = rng.permutation(np.flatnonzero(labels == cls))
        start = 0
        for s, c in enumerate(split_counts(len(ids), fractions)):
            split_of[ids[start:start + c]] = s
            start += c
    row_of = np.zeros(len(labels), np.int64)
    for s in range(len(fractions)):
        members = rng.permutation(np.flatnonzero(split_of == s))
        row_of[members] = np.arange(len(members))
    return split_of, row_of


def parse_split(text):
    """"train=0.7,val=0.1,test=0.2" -> {"train": 0.7, ...} (fractions must sum to 1)."""
    out = {}
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        try:
            if not eq or not name.strip():
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise CremaError(f"bad split '{part}' in '{text}': write name=fraction, e.g. "
                             "train=0.7,val=0.1,test=0.2") from None
    return _check_split(out)


def _check_split(split):
    split = {str(k): float(v) for k, v in dict(split).items()}
    if not split or any(not v >= 0 for v in split.values()) or abs(sum(split.values()) - 1) > 1e-6:
        raise CremaError(f"split fractions must be >= 0 and sum to 1, got {split}")
    for name in split:
        if not name.replace("_", "").replace("-", "").isalnum():
            raise CremaError(f"split name '{name}' must be a plain word (it names a file)")
    return split


def plan_tasks(processes, counts, block_size):
    """Tasks for `counts[i]` events of `processes[i]`, in plan order, and each plan event's
    (label, process code)."""
    tasks, labels, codes = [], [], []
    offset = 0
    for proc, count in zip(processes, counts):
        for b, start in enumerate(range(0, int(count), block_size)):
            n = min(block_size, int(count) - start)
            tasks.append(Task(proc, b, n, offset))
            offset += n
        labels += [proc.label] * int(count)
        codes += [proc.code] * int(count)
    return tasks, np.array(labels, np.int32), np.array(codes, np.int32)


def _mpi_comm(mode):
    """COMM_WORLD when running under MPI with more than one rank (mode "auto"), else None."""
    if mode in (False, "off", None):
        return None
    if mode == "auto" and not any(k in os.environ for k in _MPI_ENV):
        return None  # not launched by an MPI starter: do not initialise MPI for nothing
    try:
        from mpi4py import MPI
    except ImportError:
        if mode == "on":
            raise CremaError("mpi=on but mpi4py is not importable") from None
        return None
    comm = MPI.COMM_WORLD
    return comm if comm.Get_size() > 1 else None


def _execute(tasks, cfg, workers, comm, on_result):
    """Run every task once, calling on_result(result) (on rank 0 only under MPI)."""
    if comm is not None:
        _execute_mpi(tasks, cfg, comm, on_result)
    elif workers <= 1 or len(tasks) <= 1:
        for t in tasks:
            on_result(run_block(t, cfg))
    else:
        # spawn, not fork: the parent may hold threads (tqdm's monitor, h5py, test runners).
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(processes=min(workers, len(tasks))) as pool:
            for res in pool.imap_unordered(_run_block_args, [(t, cfg) for t in tasks]):
                on_result(res)


def _execute_mpi(tasks, cfg, comm, on_result):
    from mpi4py import MPI
    rank, size = comm.Get_rank(), comm.Get_size()
    mine = tasks[rank::size]
    if rank != 0:
        for t in mine:
            try:
                res = run_block(t, cfg)
            except BaseException as exc:
                comm.send(("error", rank, "".join(traceback.format_exception(exc))), dest=0,
                          tag=_TAG_RESULT)
                raise
            comm.send(("result", rank, res), dest=0, tag=_TAG_RESULT)
        return
    expected = len(tasks) - len(mine)

    def receive(block):
        nonlocal expected
        status = MPI.Status()
        while expected and (block or comm.iprobe(source=MPI.ANY_SOURCE, tag=_TAG_RESULT)):
            kind, src, payload = comm.recv(source=MPI.ANY_SOURCE, tag=_TAG_RESULT, status=status)
            if kind == "error":
                raise CremaError(f"HEP generation failed on MPI rank {src}:\n{payload}")
            expected -= 1
            on_result(payload)
    for t in mine:
        on_result(run_block(t, cfg))
        receive(block=False)  # drain what has arrived, so senders do not wait long
    receive(block=True)


def _combine_sigma(stats):
    """Per process: total generated events and the generation-weighted mean of the block cross
    sections, summed in (block) order so the result is bit-for-bit reproducible."""
    out = {}
    for code in sorted({c for c, _ in stats}):
        blocks = [stats[k] for k in sorted(k for k in stats if k[0] == code)]
        n = sum(b["n_generated"] for b in blocks)
        sigma = sum(b["sigma_pb"] * b["n_generated"] for b in blocks) / n
        err2 = sum((b["sigma_err_pb"] * b["n_generated"]) ** 2 for b in blocks) / n ** 2
        out[code] = {"n_generated": int(n), "sigma_pb": float(sigma),
                     "sigma_err_pb": float(np.sqrt(err2)),
                     "n_accepted": int(sum(b["n"] for b in blocks)),
                     "seconds": float(sum(b["seconds"] for b in blocks)),
                     "cpu_seconds": float(sum(b["cpu_seconds"] for b in blocks)),
                     "pileup_events": int(sum(b["pileup_events"] for b in blocks))}
    return out


def _normweights(labels, weights):
    """Per class, rescale so each class present sums to len/number-of-classes-present."""
    nw = np.zeros(len(labels), np.float64)
    present = [c for c in (0, 1) if np.any(labels == c)]
    for c in present:
        sel = labels == c
        total = weights[sel].sum()
        nw[sel] = weights[sel] * (len(labels) / len(present)) / total if total > 0 else 0.0
    return nw


def generate(out, n_signal, n_background, sizes=(64,), seed=0, workers=1, pileup=0.0,
             split=None, block_size=DEFAULT_BLOCK_SIZE, preselection="baseline",
             pthat_edges=events.DEFAULT_PTHAT_EDGES, slice_fractions=None,
             signal_model="direct", gluino_mass=1400.0, neutralino_mass=850.0,
             signal_xsec_pb=None, normalize=True, detector=None, progress=True, mpi="auto",
             max_tries_per_event=20000):
    """Generate the HEP benchmark into directory `out` and return the paths:
    ``{"meta": OUT/meta.json, "files": {size: {split: OUT/<size>/<split>.h5}},
    "lists": {size: {split: OUT/<size>/<split>.txt}}}`` (the .txt files list the .h5 file for
    Caffe's HDF5Data ``source``). Splits with no events get no file.

    n_signal / n_background: accepted events (background shared between the p^T_hat slices in
    `slice_fractions`, equal shares by default). sizes: image sizes (64 and/or 224, any >= 1).
    seed: base seed (>= 0); the output is identical for equal arguments, whatever `workers`.
    pileup: mean number mu of minimum-bias events overlaid per event (Poisson), 0 for none.
    split: {"train": 0.7, "val": 0.1, "test": 0.2} by default. normalize: divide each image
    channel by its training-split maximum (stored either way as the ``channel_max`` attribute).
    signal_xsec_pb: replace Pythia's LO gluino-pair cross section (e.g. by an NLO+NLL value).
    mpi: "auto" (use MPI when launched under it with > 1 rank), "on" or "off"; under MPI every
    rank must call generate() with the same arguments and every rank gets the paths.
    workers > 1 starts spawned processes, which import the caller's main module: a script must
    call generate() under ``if __name__ == "__main__":``.
    See the module docstring for blocks, splits, preselection and parallelism.
    """
    sizes = tuple(sorted({int(s) for s in sizes}))
    if not sizes or min(sizes) < 1:
        raise CremaError(f"image sizes must be positive integers, got {sizes}")
    n_signal, n_background = int(n_signal), int(n_background)
    if n_signal < 0 or n_background < 0 or n_signal + n_background == 0:
        raise CremaError("ask for at least one event (n_signal, n_background >= 0)")
    if int(seed) < 0:
        raise CremaError(f"seed must be >= 0, got {seed}")
    block_size = int(block_size)
    if block_size < 1:
        raise CremaError(f"block_size must be >= 1, got {block_size}")
    if preselection not in PRESELECTIONS:
        raise CremaError(f"unknown preselection '{preselection}' "
                         f"(known: {', '.join(PRESELECTIONS)})")
    split = _check_split(DEFAULT_SPLIT if split is None else split)
    detector = detector or Detector()

    signal = events.signal_process(signal_model, gluino_mass, neutralino_mass)
    slices = events.qcd_processes(pthat_edges)
    if slice_fractions is None:
        slice_fractions = [1.0 / len(slices)] * len(slices)
    if len(slice_fractions) != len(slices) or any(not f >= 0 for f in slice_fractions) \
            or sum(slice_fractions) <= 0:
        raise CremaError(f"slice_fractions needs {len(slices)} non-negative values, got "
                         f"{slice_fractions}")
    frac = np.asarray(slice_fractions, np.float64) / np.sum(slice_fractions)
    bkg_counts = split_counts(n_background, frac)
    processes = [signal] + slices
    tasks, labels, codes = plan_tasks(processes, [n_signal] + list(bkg_counts), block_size)
    # Run order: early blocks of every process first, so all of them progress together.
    run_order = sorted(tasks, key=lambda t: (t.block, t.process.code))

    cfg = WorkerConfig(seed=int(seed), sizes=sizes, pileup=float(pileup),
                       preselection=preselection, detector=detector,
                       max_tries_per_event=int(max_tries_per_event))
    comm = _mpi_comm(mpi)
    rank = comm.Get_rank() if comm is not None else 0

    out = os.path.abspath(out)
    names = list(split)
    split_of, row_of = assign_splits(labels, [split[k] for k in names], seed)
    n_rows = {k: int(np.count_nonzero(split_of == i)) for i, k in enumerate(names)}
    paths = {"meta": os.path.join(out, "meta.json"),
             "files": {s: {k: os.path.join(out, str(s), f"{k}.h5") for k in names if n_rows[k]}
                       for s in sizes},
             "lists": {s: {k: os.path.join(out, str(s), f"{k}.txt") for k in names if n_rows[k]}
                       for s in sizes}}

    if rank != 0:
        try:
            _execute(run_order, cfg, 1, comm, None)
        except BaseException as exc:
            _abort(comm, exc)
        return comm.bcast(None, root=0)

    writers = {}
    try:
        for s in sizes:
            os.makedirs(os.path.join(out, str(s)), exist_ok=True)
            for k in names:
                if n_rows[k]:
                    writers[s, k] = writer.SplitWriter(paths["files"][s][k], n_rows[k], s)
        n_total = len(labels)
        feats = {name: np.zeros(n_total, arr.dtype) for name, arr in _feature_columns().items()}
        jet_table = np.zeros((n_total, writer.MAX_JETS, 4), np.float32)
        stats = {}
        bar = _progress(n_total, progress)
        wall0 = time.perf_counter()

        def on_result(res):
            g0, n = res["offset"], res["n"]
            for j in range(n):
                g = g0 + j
                k = names[split_of[g]]
                for s in sizes:
                    writers[s, k].put(row_of[g], res["images"][s][j])
            for name, arr in res["columns"].items():
                feats[name][g0:g0 + n] = arr
            jet_table[g0:g0 + n] = res["jets"]
            stats[res["code"], res["block"]] = {key: res[key] for key in
                                                ("n", "n_generated", "sigma_pb", "sigma_err_pb",
                                                 "seconds", "cpu_seconds", "pileup_events")}
            if bar is not None:
                bar.update(n)

        try:
            _execute(run_order, cfg, int(workers), comm, on_result)
        finally:
            if bar is not None:
                bar.close()
        wall = time.perf_counter() - wall0

        per_process = _combine_sigma(stats)
        if signal_xsec_pb is not None and 0 in per_process:
            per_process[0]["sigma_pb_pythia"] = per_process[0]["sigma_pb"]
            per_process[0]["sigma_pb"] = float(signal_xsec_pb)
        weights = np.zeros(n_total, np.float64)
        for code, p in per_process.items():
            weights[codes == code] = p["sigma_pb"] / p["n_generated"]

        channel_max = {}
        for s in sizes:
            if (s, "train") in writers:
                channel_max[s] = writers[s, "train"].max.copy()
                source = "train"
            else:  # no training split asked for (or it is empty): the maxima of everything
                channel_max[s] = np.max([w.max for (ws, _), w in writers.items() if ws == s],
                                        axis=0)
                source = "all"
        config = {"seed": int(seed), "sizes": list(sizes), "n_signal": n_signal,
                  "n_background": n_background, "block_size": block_size, "pileup": float(pileup),
                  "split": split, "preselection": preselection,
                  "pthat_edges": [float(e) for e in pthat_edges],
                  "slice_fractions": [float(f) for f in frac], "signal_model": signal_model,
                  "gluino_mass": float(gluino_mass),
                  "neutralino_mass": float(neutralino_mass) if signal_model == "cascade" else None,
                  "signal_xsec_pb": signal_xsec_pb, "normalize": bool(normalize),
                  "detector": asdict(detector), "ecm_gev": events.ECM}
        config_json = json.dumps(config, sort_keys=True)

        for i, k in enumerate(names):
            if not n_rows[k]:
                continue
            members = np.flatnonzero(split_of == i)
            order = members[np.argsort(row_of[members])]  # plan indices in row order
            cols = {name: arr[order] for name, arr in feats.items()}
            cols["label"] = labels[order]
            cols["weight"] = weights[order]
            cols["normweight"] = _normweights(labels[order], weights[order])
            cols["event_id"] = order.astype(np.int64)
            for s in sizes:
                writers[s, k].finish(cols, channel_max[s], normalize,
                                     {"split": k, "config": config_json,
                                      "channel_max_source": source},
                                     jet_table[order])
                writer.write_text_atomic(paths["lists"][s][k], paths["files"][s][k] + "\n")

        summary = _summary(labels, weights, feats, per_process, processes, wall, workers, comm)
        meta = {"generator": writer.GENERATOR_TAG, "config": config,
                "versions": _versions(),
                "channel_max": {str(s): channel_max[s].tolist() for s in sizes},
                "channel_max_source": source,
                "rows": n_rows, "files": {str(s): v for s, v in paths["files"].items()},
                **summary}
        writer.write_text_atomic(paths["meta"], json.dumps(meta, indent=1, sort_keys=True) + "\n")
        result = paths
    except BaseException as exc:
        for w in writers.values():
            w.abort()  # no temporaries left behind, targets untouched
        if comm is not None:
            _abort(comm, exc)
        raise
    if comm is not None:
        comm.bcast(result, root=0)
    return result


def _abort(comm, exc):
    """An error on one rank ends the whole MPI job at once, naming the rank (the other ranks
    would otherwise wait forever for its blocks)."""
    sys.stderr.write(f"crema data hep: MPI rank {comm.Get_rank()} of {comm.Get_size()} failed: "
                     f"{''.join(traceback.format_exception(exc))}\n")
    sys.stderr.flush()
    comm.Abort(1)


def _progress(total, enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="ev", desc="hep events", file=sys.stderr, dynamic_ncols=True)


def _versions():
    out = {}
    for mod in ("pythia8mc", "fastjet", "numpy", "h5py"):
        try:
            from importlib.metadata import version
            out[mod] = version(mod)
        except Exception:
            out[mod] = None
    return out


def _summary(labels, weights, feats, per_process, processes, wall, workers, comm):
    by_code = {p.code: p for p in processes}
    proc_rows = {}
    for code, p in per_process.items():
        proc = by_code[code]
        proc_rows[proc.name] = {
            **p, "code": code, "label": proc.label,
            "acceptance": p["n_accepted"] / p["n_generated"],
            # Rates per CPU second of one process: robust to other load on the machine.
            "accepted_per_s": _rate(p["n_accepted"], p["cpu_seconds"]),
            "generated_per_s": _rate(p["n_generated"], p["cpu_seconds"])}
    flow = cuts.cut_flow(feats["njet"], feats["lead_pt"], feats["deta12"], feats["msum"], labels,
                         weights)
    classes = {}
    for name, cls in (("signal", 1), ("background", 0)):
        sel = labels == cls
        if not sel.any():
            continue
        w = weights[sel]
        classes[name] = {
            "n": int(sel.sum()), "mean_njet": float(feats["njet"][sel].mean()),
            "weighted_mean_njet": float(np.average(feats["njet"][sel], weights=w)),
            "njet_histogram": np.bincount(feats["njet"][sel], minlength=8).tolist(),
            "mean_msum": float(feats["msum"][sel].mean()),
            "efficiency": {cut: v[0] for cut, v in flow[name].items()},
            "weighted_efficiency": {cut: v[1] for cut, v in flow[name].items()},
            "sigma_accepted_pb": float(w.sum())}
    total_gen = sum(p["n_generated"] for p in per_process.values())
    total_acc = sum(p["n_accepted"] for p in per_process.values())
    busy = sum(p["seconds"] for p in per_process.values())
    cpu = sum(p["cpu_seconds"] for p in per_process.values())
    return {"processes": proc_rows, "classes": classes,
            "timing": {"wall_s": wall, "worker_busy_s": busy, "worker_cpu_s": cpu,
                       "workers": int(comm.Get_size()) if comm is not None else int(workers),
                       "accepted_per_s_per_process": _rate(total_acc, cpu),
                       "generated_per_s_per_process": _rate(total_gen, cpu),
                       "accepted_per_s_wall": _rate(total_acc, wall)}}


def _rate(n, seconds):
    return n / seconds if seconds > 0 else None
