"""`crema demo climate`: semi-supervised detection of extreme weather (Racah et al., NeurIPS 2017)
end to end.

1. Data: synthetic CAM5-like fields in the ExtremeWeather layout (engine.data.climate: Holland
   vortices for tropical depressions, tropical cyclones and extratropical cyclones, moisture
   filaments for atmospheric rivers, over a zonal-mean climatology with correlated noise) on a
   96 x 144 global grid, generated into a cache folder on first use; 10 % of the training images
   are labeled; per-channel statistics of the training images normalise the inputs.
2. Training, twice, through crema's solver (Adam, examples/climate/climate_train_test.prototxt):
   the same net, seed, batches and iterations, once semi-supervised (YOLO loss on the labeled
   images + lambda * reconstruction of all images) and once supervised only (lambda = 0: the
   unlabeled images then add nothing). Progress bars run beside Caffe's log lines.
3. Evaluation on held-out, fully labeled images: boxes decoded from the 12 x 18 grid, per-class
   non-maximum suppression, per-class AP and mAP at IoU 0.1 and 0.5 (VOC all-points), a table
   and a PNG of predicted and true boxes over TMQ.
The last line printed is the result:
  climate result: mAP@0.1 semi-supervised 0.xxx vs supervised 0.xxx; mAP@0.5 semi-supervised
  0.xxx vs supervised 0.xxx; labeled 10%
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
NET_FILE = REPO / "examples" / "climate" / "climate_train_test.prototxt"
IOU_THRESHOLDS = (0.1, 0.5)
NMS_IOU = 0.4
SHORT = ("TD", "TC", "ETC", "AR")


def build_parser():
    ap = argparse.ArgumentParser(prog="crema demo climate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default=cache_dir("climate-demo"),
                    help="folder for the generated data (default: %(default)s; CREMA_CACHE)")
    ap.add_argument("--out", default="climate-demo", help="folder for the plot and result files")
    ap.add_argument("--train", type=int, default=1000, help="training images (default 1000)")
    ap.add_argument("--test", type=int, default=200, help="test images (default 200)")
    ap.add_argument("--labeled", type=float, default=0.1,
                    help="labeled fraction of the training images (default 0.1)")
    ap.add_argument("--iters", type=int, default=600,
                    help="iterations per model, batches of 1 labeled + 7 unlabeled (default 600)")
    ap.add_argument("--lambda", dest="lam", type=float, default=10.0,
                    help="weight of the reconstruction MSE in the semi-supervised run (default 10,"
                         " the paper's)")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="kernel threads (default: all cores)")
    ap.add_argument("--workers", type=int, default=0,
                    help="generator processes (default: the CPU cores)")
    ap.add_argument("--quiet", action="store_true", help="no Caffe log lines, only progress")
    return ap


def _cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


# -- data ----------------------------------------------------------------------------------------

def ensure_data(args):
    """Paths of train.h5, test.h5 and stats.json for these settings (generated when absent)."""
    from ..data.climate import ExtremeWeatherFile, generate
    from ..data.climate.generator import GENERATOR_VERSION, Config
    config = Config()
    key = (f"v{GENERATOR_VERSION}-{config.height}x{config.width}-train{args.train}-"
           f"test{args.test}-labeled{args.labeled:g}-seed{args.seed}")
    folder = Path(args.cache) / key
    paths = {"train": folder / "train.h5", "test": folder / "test.h5",
             "stats": folder / "stats.json"}
    if all(p.exists() for p in paths.values()):
        print(f"data: reusing {folder}", flush=True)
        return paths
    workers = args.workers or _cores() or 1
    print(f"data: generating {args.train} training + {args.test} test images "
          f"({config.height}x{config.width}, 16 variables) into {folder} ({workers} processes)",
          flush=True)
    from tqdm import tqdm
    t0 = time.perf_counter()
    with tqdm(total=args.train + args.test, desc="generating", unit="img", file=sys.stderr,
              dynamic_ncols=True) as bar:
        generate(folder, args.train, args.test, args.labeled, args.seed, config, workers,
                 progress=bar.update)
    # statistics of all training images: unlabeled images are data too, only their boxes are not
    with ExtremeWeatherFile(paths["train"]) as f:
        stats = f.channel_stats()
    tmp = paths["stats"].with_suffix(".tmp")
    tmp.write_text(json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v)
                               for k, v in stats.items()}, indent=1))
    os.replace(tmp, paths["stats"])
    print(f"data: done in {time.perf_counter() - t0:.0f} s", flush=True)
    return paths


# -- training --------------------------------------------------------------------------------------

def net_param(paths, lam):
    """The example net with its data sources in the cache and the reconstruction weight set."""
    from ..schema import read_net_param
    if not NET_FILE.exists():
        raise CremaError(f"{NET_FILE} not found: `crema demo climate` runs from a crema source "
                         "checkout (pip install -e .)")
    net, _ = read_net_param(str(NET_FILE))
    for layer in net.layer:
        if layer.type == "Python" and layer.python_param.layer == "SemiSupervisedData":
            phase = layer.include[0].phase if layer.include else crema_pb2.TRAIN
            p = eval(layer.python_param.param_str, {"__builtins__": {}})  # a dict literal
            p["source"] = str(paths["train"] if phase == crema_pb2.TRAIN else paths["test"])
            p["stats"] = str(paths["stats"])
            p["preload"] = True  # ~0.9 GB for 1000 images: no file reads while training
            layer.python_param.param_str = repr(p)
        if layer.type == "EuclideanLoss":
            # EuclideanLoss = sum of squares / (2 N): 2 lambda / (C H W) makes it lambda * MSE
            chw = 16 * 96 * 144
            del layer.loss_weight[:]
            layer.loss_weight.append(2.0 * lam / chw)
    return net


def make_solver(args, paths, lam):
    from .. import get_solver
    solver = crema_pb2.SolverParameter(
        type="Adam", base_lr=args.lr, momentum=0.9, momentum2=0.999, delta=1e-8,
        # linear decay to zero: the final weights settle instead of being one random draw from
        # the constant-rate noise, so two runs compare on their merits
        lr_policy="poly", power=1.0, weight_decay=5e-4, max_iter=args.iters, display=100,
        random_seed=args.seed, snapshot_after_train=False, test_interval=args.iters + 1,
        test_initialization=False)
    solver.net_param.CopyFrom(net_param(paths, lam))
    return get_solver(solver)


def train(args, paths, lam, label):
    from tqdm import tqdm
    from ..solvers import SolverHooks
    solver = make_solver(args, paths, lam)

    class Progress(SolverHooks):
        def __init__(self):
            self.bar = tqdm(total=args.iters, desc=f"training ({label})", unit="it",
                            file=sys.stderr, dynamic_ncols=True)

        def after_update(self, s):
            self.bar.update(1)
            out = s.net.blobs
            recon = out["reconstruction_loss"]
            # EuclideanLoss is sum of squares / (2 N): back to a mean squared error per value
            mse = 2.0 * float(recon.data) / (out["images"].count / out["images"].shape[0])
            self.bar.set_postfix(det=f"{float(out['detection_loss'].data):.2f}",
                                 mse=f"{mse:.3f}", refresh=False)

    progress = solver.add_hooks(Progress())
    t0 = time.perf_counter()
    solver.solve()
    progress.bar.close()
    seconds = time.perf_counter() - t0
    print(f"training ({label}, lambda {lam:g}): {args.iters} iterations of 1 labeled + 7 "
          f"unlabeled images in {seconds:.0f} s", flush=True)
    return solver, seconds


# -- evaluation ------------------------------------------------------------------------------------

def deploy_net(solver, batch, shape):
    """A TEST net computing `pred` from an Input `images`, sharing the trained weights."""
    from .. import Net, TEST
    layers = [lp for lp in solver.param.net_param.layer if lp.type != "Python"]
    needed, keep = {"pred"}, []
    for lp in reversed(layers):  # only what `pred` depends on (no decoder, no losses)
        if set(lp.top) & needed and lp.type not in ("YoloDetectionLoss", "EuclideanLoss"):
            keep.append(lp)
            needed |= set(lp.bottom)
    deploy = crema_pb2.NetParameter(name="climate_deploy")
    inp = deploy.layer.add(name="input", type="Input", top=["images"])
    inp.input_param.shape.add(dim=[batch] + list(shape))
    for lp in reversed(keep):
        deploy.layer.add().CopyFrom(lp)
        del deploy.layer[-1].include[:]
    net = Net(deploy, TEST)
    net.share_with(solver.net)
    return net


def predict(solver, images, batch=20):
    net = deploy_net(solver, batch, images.shape[1:])
    out = None
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        data = np.zeros((batch,) + images.shape[1:], np.float32)
        data[:len(chunk)] = chunk
        pred = net.forward(images=data)["pred"]
        if out is None:
            out = np.empty((len(images),) + pred.shape[1:], np.float32)
        out[start:start + len(chunk)] = pred[:len(chunk)]
    return out


def head_settings(solver):
    """The YoloDetectionLoss settings (stride, prior, obj_prior, ...) of the solver's net: the
    decoder must read the outputs with the parametrisation the loss trained them in."""
    from ..layers.detection import parse_params
    for lp in solver.param.net_param.layer:
        if lp.type == "YoloDetectionLoss":
            return parse_params(lp)
    raise CremaError("the climate net has no YoloDetectionLoss layer")


def detect(pred, settings=None):
    """Per image: decoded boxes after per-class NMS, rows ymin, xmin, ymax, xmax, class, score.
    settings: the loss layer's (head_settings); default: the layer's defaults."""
    from ..layers.detection import DEFAULTS, decode_predictions
    from ..metrics import nms
    s = dict(DEFAULTS, **(settings or {}))
    num_classes = int(s["num_classes"])
    out = []
    for rows in decode_predictions(pred, s["stride"], s["prior"], num_classes,
                                   score_threshold=0.01, obj_prior=s["obj_prior"]):
        kept = [rows[rows[:, 4] == c][nms(rows[rows[:, 4] == c, :4], rows[rows[:, 4] == c, 5],
                                          NMS_IOU)] for c in range(num_classes)]
        rows = np.concatenate(kept) if kept else rows[:0]
        out.append(rows[np.argsort(-rows[:, 5], kind="stable")])
    return out


def score(dets, boxes):
    from ..metrics import detection_ap
    res = {}
    for thr in IOU_THRESHOLDS:
        ap, m = detection_ap(dets, list(boxes), 4, thr)
        res[thr] = {"ap": ap, "map": m}
    return res


def load_test(paths):
    from ..data.climate import ExtremeWeatherFile, normalize
    stats = json.loads(Path(paths["stats"]).read_text())
    with ExtremeWeatherFile(paths["test"]) as f:
        raw, boxes = f.read()
    return raw, normalize(raw, stats), boxes


def table(results):
    lines = [f"{'':18}" + "".join(f"{SHORT[c] + ' AP@' + str(t):>11}" for t in IOU_THRESHOLDS
                                  for c in range(4))
             + "".join(f"{'mAP@' + str(t):>9}" for t in IOU_THRESHOLDS)]
    for label, res in results.items():
        lines.append(f"{label:18}" + "".join(f"{res[t]['ap'][c]:>11.3f}" for t in IOU_THRESHOLDS
                                             for c in range(4))
                     + "".join(f"{res[t]['map']:>9.3f}" for t in IOU_THRESHOLDS))
    return "\n".join(lines)


def plot_boxes(raw, boxes, dets_by_model, path, images=(0, 1), min_score=0.3):
    """TMQ of test images with the true boxes (white) and each model's detections (coloured by
    class, score >= min_score), one row per image, one column per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from ..data.climate import CHANNEL
    colours = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e")
    labels = list(dets_by_model)
    fig, axes = plt.subplots(len(images), len(labels), figsize=(6.2 * len(labels),
                                                                 3.6 * len(images)),
                             squeeze=False)
    for r, i in enumerate(images):
        for c, label in enumerate(labels):
            ax = axes[r][c]
            # imshow centres pixel i on i, a box edge at i is the pixel's lower edge: i - 0.5
            ax.imshow(raw[i, CHANNEL["TMQ"]], origin="lower", cmap="Blues", vmin=0, vmax=70)
            for b in boxes[i][boxes[i][:, 4] >= 0]:
                ax.add_patch(Rectangle((b[1] - 0.5, b[0] - 0.5), b[3] - b[1], b[2] - b[0], fill=False,
                                       ec="k", lw=2.2))
            for d in dets_by_model[label][i]:
                if d[5] < min_score:
                    continue
                k = int(d[4])
                ax.add_patch(Rectangle((d[1] - 0.5, d[0] - 0.5), d[3] - d[1], d[2] - d[0], fill=False,
                                       ec=colours[k], lw=1.4, ls="--"))
                ax.text(d[1], d[2] + 0.5, f"{SHORT[k]} {d[5]:.2f}", color=colours[k],
                        fontsize=6)
            ax.set_title(f"test image {i}: {label}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("TMQ (kg m$^{-2}$); black: true boxes; dashed: detections (TD blue, TC red, "
                 "ETC green, AR orange)", fontsize=9)
    fig.tight_layout()
    tmp = str(path) + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def result_line(results, labeled):
    semi, sup = results["semi-supervised"], results["supervised"]
    return (f"climate result: mAP@0.1 semi-supervised {semi[0.1]['map']:.3f} vs supervised "
            f"{sup[0.1]['map']:.3f}; mAP@0.5 semi-supervised {semi[0.5]['map']:.3f} vs "
            f"supervised {sup[0.5]['map']:.3f}; labeled {labeled * 100:.0f}%")


def main(argv=None):
    args = build_parser().parse_args(argv)
    from .. import set_num_threads
    from ..logs import install_glog_format
    install_glog_format().setLevel(logging.WARNING if args.quiet else logging.INFO)
    log.setLevel(logging.INFO)
    t0 = time.perf_counter()
    try:
        paths = ensure_data(args)
    except CremaError as e:
        print(f"crema demo climate: {e}", file=sys.stderr)
        return 1
    set_num_threads(args.threads or _cores() or 1)
    raw, images, boxes = load_test(paths)
    results, dets, seconds = {}, {}, {}
    for label, lam in (("semi-supervised", args.lam), ("supervised", 0.0)):
        solver, seconds[label] = train(args, paths, lam, label)
        dets[label] = detect(predict(solver, images), head_settings(solver))
        results[label] = score(dets[label], boxes)
        del solver
    print(table(results), flush=True)
    os.makedirs(args.out, exist_ok=True)
    png = os.path.join(args.out, "climate_detections.png")
    plot_boxes(raw, boxes, dets, png)
    summary = {label: {str(t): {"ap": [None if np.isnan(a) else float(a) for a in r[t]["ap"]],
                                "map": r[t]["map"]} for t in IOU_THRESHOLDS}
               for label, r in results.items()}
    summary.update(labeled=args.labeled, iters=args.iters, lam=args.lam,
                   train_seconds=seconds, total_seconds=time.perf_counter() - t0)
    with open(os.path.join(args.out, "climate_result.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"detections plot: {png}; total {time.perf_counter() - t0:.0f} s", flush=True)
    print(result_line(results, args.labeled), flush=True)
    return 0
