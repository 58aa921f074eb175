"""`crema demo hep`: the HEP classifier of "Deep Learning at 15PF" end to end.

1. Data: Pythia 8 RPV gluino pairs (m = 1400 GeV) against QCD multijets, through an ATLAS-like
   fast detector, as 3-channel 64x64 calorimeter images (engine.data.hep), generated into a cache
   folder on first use (later runs reuse it; the folder name encodes the generation settings).
2. Training: the NERSC benchmark CNN (examples/hep/hep_64_train_test.prototxt: 4 x conv+pool,
   conv, global average pooling, InnerProduct 2, softmax loss weighted per event by `normweight`)
   with Adam, lr 1e-3, through crema's solver, with a progress bar beside Caffe's log lines.
3. Evaluation on the held-out test events, weighted by their cross-section weights: the CNN's ROC
   curve and AUC, the ATLAS RPV multijet selection (SR4J or SR5J: `psr`) as one operating point,
   and the CNN's true-positive rate at the cuts' false-positive rate (the paper's comparison);
   a table and a PNG of the curves.
The last line printed is the result:
  HEP result: CNN AUC 0.xxx, cuts TPR 0.xxx at FPR 0.xxxxx; CNN TPR 0.xxx at that FPR (x.xx times
  the cuts); N test events
"""
import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from .. import crema_pb2
from ..errors import CremaError
from . import cache_dir

log = logging.getLogger("crema")
REPO = Path(__file__).resolve().parents[2]
NET_FILE = REPO / "examples" / "hep" / "hep_{size}_train_test.prototxt"


def build_parser():
    ap = argparse.ArgumentParser(prog="crema demo hep", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default=cache_dir("hep-demo"),
                    help="folder for the generated events (default: %(default)s; CREMA_CACHE)")
    ap.add_argument("--out", default="hep-demo", help="folder for the ROC plot, table, weights")
    ap.add_argument("--signal", type=int, default=1500, help="signal events to generate")
    ap.add_argument("--background", type=int, default=3000, help="background events")
    ap.add_argument("--pthat-slices", default="400,700,1000,1500",
                    help="QCD p^T_hat slice edges in GeV (default %(default)s: the 200-400 GeV "
                         "slice, where 1 event in 500 passes the baseline selection, would take "
                         "most of the demo's time; crema data hep includes it by default)")
    ap.add_argument("--size", type=int, default=64, choices=(64, 224))
    ap.add_argument("--iters", type=int, default=700, help="training iterations (batch 32)")
    ap.add_argument("--workers", type=int, default=0,
                    help="generator processes (default: the CPU cores)")
    ap.add_argument("--threads", type=int, default=0, help="kernel threads (default: all cores)")
    ap.add_argument("--train-weights", choices=("none", "normweight"), default="none",
                    help="per-event loss weights in training: none (every event counts once, as "
                         "the NERSC benchmark trains) or normweight (cross-section weights, each "
                         "class summing to half; the net file's setting)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="convolutions and inner products in float32 or bfloat16 (bf16 operands, "
                         "float32 accumulation and master weights), in training and evaluation")
    ap.add_argument("--pileup", type=float, default=0.0, help="mean pile-up events per event")
    ap.add_argument("--quiet", action="store_true", help="no Caffe log lines, only progress")
    return ap


# -- data ----------------------------------------------------------------------------------------

def ensure_data(args):
    """The generated data set for these settings (made now when the cache lacks it)."""
    from ..data.hep import generate
    edges = tuple(float(e) for e in args.pthat_slices.split(","))
    key = (f"s{args.signal}-b{args.background}-{args.size}px-seed{args.seed}-mu{args.pileup:g}"
           f"-pthat{'_'.join(f'{e:g}' for e in edges)}")
    folder = Path(args.cache) / key
    meta = folder / "paths.json"
    if meta.exists():
        paths = json.loads(meta.read_text())
        if all(Path(p).exists() for p in paths["files"].values()):
            print(f"events: reusing {folder}", flush=True)
            return paths
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = args.workers or cores or 1
    print(f"events: generating {args.signal} signal + {args.background} background events with "
          f"Pythia 8 into {folder} ({workers} processes)", flush=True)
    t0 = time.perf_counter()
    out = generate(folder, args.signal, args.background, sizes=(args.size,), seed=args.seed,
                   workers=workers, pileup=args.pileup, pthat_edges=edges,
                   split={"train": 0.6, "val": 0.1, "test": 0.3}, mpi="off")
    files = {split: str(p) for split, p in out["files"][args.size].items()}
    lists = {split: str(p) for split, p in out["lists"][args.size].items()}
    paths = {"files": files, "lists": lists}
    tmp = meta.with_suffix(".tmp")
    tmp.write_text(json.dumps(paths))
    os.replace(tmp, meta)
    print(f"events: done in {time.perf_counter() - t0:.0f} s", flush=True)
    return paths


# -- training --------------------------------------------------------------------------------------

def make_solver(args, paths):
    from .. import get_solver
    from ..schema import read_net_param
    net_path = str(NET_FILE).format(size=args.size)
    if not os.path.exists(net_path):
        raise CremaError(f"{net_path} not found: `crema demo hep` runs from a crema source "
                         "checkout (pip install -e .)")
    net, _ = read_net_param(net_path)
    if getattr(args, "train_weights", "normweight") == "none":
        for layer in net.layer:  # drop the weight input: an unweighted softmax loss
            if layer.type == "HDF5Data":
                layer.top.remove("normweight")
            elif layer.type == "SoftmaxWithLoss":
                layer.bottom.remove("normweight")
    for layer in net.layer:
        if layer.type == "HDF5Data":
            phase = layer.include[0].phase if layer.include else crema_pb2.TRAIN
            split = "train" if phase == crema_pb2.TRAIN else ("val" if "val" in paths["lists"]
                                                               else "test")
            layer.hdf5_data_param.source = paths["lists"][split]
    solver = crema_pb2.SolverParameter(type="Adam", base_lr=1e-3, momentum=0.9, momentum2=0.999,
                                       delta=1e-8, lr_policy="fixed", max_iter=args.iters,
                                       display=100, random_seed=args.seed,
                                       snapshot_after_train=False, test_interval=args.iters,
                                       test_initialization=False,
                                       precision=getattr(args, "precision", "fp32"))
    solver.test_iter.append(5)
    solver.net_param.CopyFrom(net)
    return get_solver(solver)


def train(args, paths):
    from tqdm import tqdm
    from ..solvers import SolverHooks
    solver = make_solver(args, paths)

    class Progress(SolverHooks):
        def __init__(self):
            self.bar = tqdm(total=args.iters, desc="training", unit="it", file=sys.stderr,
                            dynamic_ncols=True)

        def after_update(self, s):
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{float(s.smoothed_loss):.3f}", refresh=False)

    progress = solver.add_hooks(Progress())
    t0 = time.perf_counter()
    solver.solve()
    progress.bar.close()
    seconds = time.perf_counter() - t0
    print(f"training: {args.iters} iterations of batch 32 in {seconds:.0f} s "
          f"({args.iters * 32 / seconds:.0f} images/s)", flush=True)
    return solver


# -- evaluation ------------------------------------------------------------------------------------

def cnn_scores(solver, images, batch=100):
    """P(signal) for every image, with the trained weights, in batches."""
    from .. import Net, TEST
    from ..schema import read_net_param
    train_param = solver.net.to_proto()
    deploy = crema_pb2.NetParameter(name="hep_deploy")
    inp = deploy.layer.add(name="data", type="Input", top=["data"])
    inp.input_param.shape.add(dim=[batch] + list(images.shape[1:]))
    for layer in train_param.layer:
        if layer.type in ("HDF5Data", "SoftmaxWithLoss", "Accuracy") or layer.type == "Split":
            continue
        deploy.layer.add().CopyFrom(layer)
    prob = deploy.layer.add(name="prob", type="Softmax", bottom=["score"], top=["prob"])
    del prob.include[:]
    net = Net(deploy, TEST)
    net.share_with(solver.net)
    net.set_precision(solver.net.precision)
    from tqdm import tqdm
    out = np.empty(len(images), np.float32)
    for start in tqdm(range(0, len(images), batch), desc="evaluating", unit="batch",
                      file=sys.stderr, dynamic_ncols=True):
        chunk = images[start:start + batch]
        data = np.zeros((batch,) + images.shape[1:], np.float32)
        data[:len(chunk)] = chunk
        p = net.forward(data=data)["prob"]
        out[start:start + len(chunk)] = p[:len(chunk), 1]
    return out


def evaluate(solver, paths, out_dir):
    import h5py
    from ..metrics import roc_curve, auc, tpr_at_fpr
    with h5py.File(paths["files"]["test"], "r", locking=False) as f:  # as HDF5Data opens it
        images = np.asarray(f["data"], np.float32)
        labels = np.asarray(f["label"]).astype(int)
        weights = np.asarray(f["weight"], np.float64)
        psr = np.asarray(f["psr"]).astype(bool)
    scores = cnn_scores(solver, images)
    fpr, tpr, _ = roc_curve(scores, labels, weights)
    area = auc(fpr, tpr)
    sig, bkg = labels == 1, labels == 0
    cut_tpr = float(weights[sig & psr].sum() / weights[sig].sum())
    cut_fpr = float(weights[bkg & psr].sum() / weights[bkg].sum())
    cnn_tpr = float(tpr_at_fpr(fpr, tpr, cut_fpr))
    result = {"auc": float(area), "cut_tpr": cut_tpr, "cut_fpr": cut_fpr, "cnn_tpr": cnn_tpr,
              "ratio": cnn_tpr / cut_tpr if cut_tpr > 0 else float("inf"),
              "events": int(len(labels)), "signal": int(sig.sum()), "background": int(bkg.sum())}
    os.makedirs(out_dir, exist_ok=True)
    plot_roc(fpr, tpr, result, os.path.join(out_dir, "hep_roc.png"))
    table = (f"{'':24}{'TPR':>10}{'FPR':>12}\n"
             f"{'ATLAS cuts (SR4J|SR5J)':24}{cut_tpr:>10.3f}{cut_fpr:>12.5f}\n"
             f"{'CNN at the cuts FPR':24}{cnn_tpr:>10.3f}{cut_fpr:>12.5f}\n"
             f"CNN AUC {area:.3f}; test events: {result['signal']} signal, "
             f"{result['background']} background (weighted by cross section)")
    print(table, flush=True)
    with open(os.path.join(out_dir, "hep_result.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


def plot_roc(fpr, tpr, result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    keep = fpr > 0
    ax.plot(fpr[keep], tpr[keep], label=f"CNN (AUC {result['auc']:.3f})")
    ax.plot([result["cut_fpr"]], [result["cut_tpr"]], "o", color="C3",
            label="ATLAS RPV cuts (SR4J or SR5J)")
    ax.plot([result["cut_fpr"]], [result["cnn_tpr"]], "s", color="C0", mfc="none",
            label="CNN at the cuts' FPR")
    ax.set_xscale("log")
    ax.set_xlabel("false-positive rate (QCD, weighted)")
    ax.set_ylabel("true-positive rate (RPV gluinos)")
    ax.set_title("HEP benchmark: held-out events")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def result_line(r):
    return (f"HEP result: CNN AUC {r['auc']:.3f}, cuts TPR {r['cut_tpr']:.3f} at FPR "
            f"{r['cut_fpr']:.5f}; CNN TPR {r['cnn_tpr']:.3f} at that FPR "
            f"({r['ratio']:.2f} times the cuts); {r['events']} test events")


def main(argv=None):
    args = build_parser().parse_args(argv)
    from .. import set_num_threads
    from ..logs import install_glog_format
    install_glog_format().setLevel(logging.WARNING if args.quiet else logging.INFO)
    log.setLevel(logging.INFO)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    t0 = time.perf_counter()
    paths = ensure_data(args)
    set_num_threads(args.threads or cores or 1)
    solver = train(args, paths)
    result = evaluate(solver, paths, args.out)
    print(f"ROC plot: {os.path.join(args.out, 'hep_roc.png')}; total {time.perf_counter() - t0:.0f} s",
          flush=True)
    print(result_line(result), flush=True)
    return 0
