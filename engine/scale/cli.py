"""`crema scale`: simulate crema's hybrid training protocol at cluster scale.

    crema scale [-model NET.prototxt | -flops_per_sample F -param_bytes B] -nodes N
                [-groups G] [-servers P] [-batch B] [-bucket_mb 25] [-first_bucket_mb 1]
                [-stragglers 0.01 -slowdown 2] [-jitter 0.05] [-max_staleness K]
                [-iterations 30] [-network aries|local] [-json OUT]
    crema scale -compare [-nodes 128 ...]   fully synchronous vs hybrid vs fully asynchronous
    crema scale -paper                      the "Deep Learning at 15PF" headline, predicted

Without -model or -flops_per_sample the model is the HEP CNN of the paper (analytic FLOPs).
With -model the net is built and timed on this machine (engine.scale.calibrate.measure) unless
-node_tflops gives a per-node rate, in which case only its FLOPs and parameters are used.
Flags take one or two dashes. Output is a table; -json OUT also writes every figure as JSON.
Everything printed is a model prediction, not a measurement.
"""
import argparse
import json
import sys
from dataclasses import replace

from .calibrate import ModelCosts, hep_cnn, measure
from .network import PROFILES, profile as network_profile
from .sim import MiB, ScaleConfig, simulate, single_node, scaling_efficiency
from . import paper


def build_parser():
    p = argparse.ArgumentParser(
        prog="crema scale", allow_abbrev=False,
        description="Discrete-event simulation of synchronous / hybrid / asynchronous "
                    "data-parallel training (a model, not a measurement).")

    def flag(name, **kw):
        p.add_argument(f"-{name}", f"--{name}", dest=name, **kw)

    flag("model", default="", help="net prototxt to build and time on this machine")
    flag("flops_per_sample", type=float, help="forward+backward FLOPs per sample")
    flag("param_bytes", type=float, help="learnable parameter bytes")
    flag("fwd_fraction", type=float, default=1 / 3,
         help="forward share of the FLOPs with -flops_per_sample (default 1/3)")
    flag("node_tflops", type=float,
         help="per-node compute rate, TFLOP/s (default 2.0 without -model, measured with it)")
    flag("nodes", type=int, default=None, help="nodes in all, servers included (default 64; "
                                               "128 with -compare)")
    flag("groups", type=int, default=None, help="synchronous groups (default 1; 4 with -compare)")
    flag("servers", type=int, default=None,
         help="parameter servers (default 0; 2 with -compare)")
    flag("batch", type=int, help="samples per worker per iteration (default: the net's, else 8)")
    flag("bucket_mb", type=float, default=25.0, help="allreduce bucket cap, MiB (default 25)")
    flag("first_bucket_mb", type=float, default=1.0, help="first bucket cap, MiB (default 1)")
    flag("stragglers", type=float, default=None,
         help="fraction of worker nodes that are slow (default 0; 0.01 with -compare)")
    flag("slowdown", type=float, default=2.0, help="slow nodes' compute factor (default 2)")
    flag("jitter", type=float, default=0.0,
         help="sigma of the per-iteration lognormal compute factor (default 0)")
    flag("max_staleness", type=int, default=None, help="bound on staleness (stale-synchronous)")
    flag("iterations", type=int, default=30, help="measured iterations (default 30)")
    flag("warmup", type=int, default=5, help="discarded first iterations (default 5)")
    flag("seed", type=int, default=0, help="random seed (default 0)")
    flag("network", default="aries", choices=sorted(PROFILES), help="network preset")
    flag("alpha_us", type=float, help="override the network latency, microseconds")
    flag("beta_gbs", type=float, help="override the network bandwidth, GB/s")
    flag("update_gbs", type=float,
         help="solver update speed, GB/s of parameters (default: measured, else 10)")
    flag("runs", type=int, default=3, help="timing runs with -model (default 3)")
    flag("compare", action="store_true", help="sync vs hybrid vs async at the same nodes")
    flag("paper", action="store_true", help="predict the 'Deep Learning at 15PF' headline")
    flag("per_group", action="store_true", help="print per-group figures")
    flag("json", default="", help="also write the results as JSON to this file")
    return p


# -- formatting ------------------------------------------------------------------------------

def _table(headers, rows):
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _si(value, unit):
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _ms(seconds):
    return f"{seconds * 1e3:.3g}"


def _pct(x):
    return f"{100 * x:.1f}%"


def _layout(r):
    return f"{r.groups}x{r.group_size}+{r.servers}"


def _staleness(r):
    return "-" if r.staleness_mean is None else f"{r.staleness_mean:.2f}/{r.staleness_max}"


def _describe(config, out):
    m = config.model
    net = config.net()
    f, b, u = config.compute_times()
    rate = (f"node {config.node_flops / 1e12:.3g} TFLOP/s" if config.node_flops
            else f"measured here at batch {m.timing.batch}")
    print(f"model: {m.name}: {m.flops_per_sample / 1e9:.4g} GFLOP/sample (forward+backward), "
          f"{m.param_bytes / 1e6:.4g} MB of parameters", file=out)
    print(f"compute: batch {config.batch_per_worker}/worker, forward {_ms(f)} ms + backward "
          f"{_ms(b)} ms, update {_ms(u)} ms ({rate})", file=out)
    print(f"network: {net.name}: alpha {net.alpha * 1e6:.3g} us, beta {net.beta / 1e9:.3g} GB/s "
          f"(model defaults unless overridden)", file=out)


def print_result(result, config, out, reference=None, per_group=False):
    r = result
    print(f"{r.mode}: {r.nodes} nodes = {r.groups} group(s) x {r.group_size} workers + "
          f"{r.servers} server(s)" + (f" + {r.idle_nodes} idle" if r.idle_nodes else ""),
          file=out)
    _describe(config, out)
    straggle = f"{r.stragglers} slow node(s) x{config.slowdown:g}" if r.stragglers else \
        "no slow nodes"
    print(f"stragglers: {straggle}, per-iteration jitter sigma {config.jitter:g}"
          + (f", max staleness {config.max_staleness}" if config.max_staleness is not None
             else ""), file=out)
    if r.buckets:
        sizes = ", ".join(f"{b / 1e6:.3g}" for b in r.buckets[:6]) + \
            (" ..." if len(r.buckets) > 6 else "")
        print(f"buckets: {len(r.buckets)} ({sizes} MB), allreduce "
              f"{_ms(sum(r.allreduce_s))} ms in all over {r.group_size} ranks", file=out)
    rows = [["iteration time (mean / median)", f"{_ms(r.iteration_mean_s)} / "
             f"{_ms(r.iteration_median_s)} ms"],
            ["throughput", f"{r.throughput:,.1f} samples/s"],
            ["sustained", f"{_si(r.flops_per_s, 'FLOP/s')} ({_si(r.flops_per_node_s, 'FLOP/s')} "
                          "per node)"]]
    if reference is not None:
        rows.append(["scaling efficiency vs 1 node", _pct(scaling_efficiency(r, reference))])
    rows.append(["time: compute / communication / waiting",
                 f"{_pct(r.share_compute)} / {_pct(r.share_comm)} / {_pct(r.share_wait)}"])
    if r.staleness_mean is not None:
        hist = " ".join(f"{k}:{v}" for k, v in sorted(r.staleness_hist.items())[:12])
        rows.append(["staleness (mean / max)", f"{r.staleness_mean:.2f} / {r.staleness_max}"])
        rows.append(["staleness histogram", hist])
    if r.server_busy:
        rows.append(["server busy (max / mean)", f"{_pct(max(r.server_busy))} / "
                     f"{_pct(sum(r.server_busy) / len(r.server_busy))}"])
    print(_table(["prediction", "value"], rows), file=out)
    if per_group:
        grows = [[g.group, g.size, g.slow_members, g.iterations, _ms(g.iteration_mean_s),
                  f"{g.samples_per_s:,.0f}",
                  "-" if g.staleness_mean is None else f"{g.staleness_mean:.2f}",
                  _pct(g.share_compute), _pct(g.share_comm), _pct(g.share_wait)]
                 for g in r.per_group[:64]]
        print(_table(["group", "size", "slow", "iters", "iter ms", "samples/s", "staleness",
                      "compute", "comm", "wait"], grows), file=out)
    for note in r.notes:
        print(f"note: {note}", file=out)


def comparison(config):
    """[(label, config)] for fully synchronous, hybrid and fully asynchronous at config.nodes."""
    n, g, p = config.nodes, config.groups, config.servers
    return [("fully synchronous", replace(config, groups=1, servers=0)),
            ("hybrid", replace(config, groups=g, servers=p)),
            ("fully asynchronous", replace(config, groups=n - p, servers=p))]


def print_compare(results, out):
    rows = []
    for label, r, eff in results:
        rows.append([label, _layout(r), _ms(r.iteration_mean_s), _ms(r.iteration_median_s),
                     f"{r.throughput:,.0f}", _si(r.flops_per_s, "FLOP/s"), _pct(eff),
                     _pct(r.share_compute), _pct(r.share_comm), _pct(r.share_wait),
                     _staleness(r)])
    print(_table(["configuration", "GxS+P", "iter ms", "median", "samples/s", "sustained",
                  "eff/1 node", "compute", "comm", "wait", "staleness"], rows), file=out)


def print_paper(rows, reference, out):
    head = rows[0]["result"]
    print("Deep Learning at 15PF (Kurth et al., SC17), HEP CNN: simulated prediction", file=out)
    _describe(paper.headline_config(), out)
    print(f"one node alone: {reference.flops_per_s / 1e12:.3g} TFLOP/s sustained "
          f"(compute at {paper.NODE_FLOPS / 1e12:g} TFLOP/s, plus the local update)", file=out)
    print("assumed (not from the paper): batch 8 per node, 8 groups + 8 parameter servers, "
          "per-iteration jitter sigma 5%; see engine/scale/paper.py", file=out)
    table = []
    for row in rows:
        r = row["result"]
        table.append([row["label"], r.nodes, _layout(r), _ms(r.iteration_mean_s),
                      f"{row['pflops']:.2f}", f"{r.flops_per_node_s / 1e12:.2f}",
                      _pct(row["efficiency"]), _staleness(r)])
    print(_table(["configuration (model)", "nodes", "GxS+P", "iter ms", "PFLOP/s",
                  "TFLOP/s/node", "eff/1 node", "staleness"], table), file=out)
    pub = paper.PUBLISHED
    lo, hi = pub["sustained_pflops"]
    print(f"\nheadline prediction: {head.flops_per_s / 1e15:.2f} PFLOP/s sustained on "
          f"{head.nodes} nodes, scaling efficiency {_pct(rows[0]['efficiency'])} vs 1 node",
          file=out)
    print(f"published (reference, not a result of this run): sustained {lo}-{hi} PFLOP/s, "
          f"peak {pub['peak_pflops'][0]}-{pub['peak_pflops'][1]} PFLOP/s, about "
          f"{pub['scaling_efficiency']:.0%} scaling efficiency ({pub['speedup']:,}x on "
          f"{pub['nodes']:,} nodes)", file=out)
    print(f"sources: {pub['sources']}", file=out)
    print("This is a model: compute-rate jitter and an optimistic alpha-beta network, no I/O, "
          "no contention between groups.", file=out)


# -- main ------------------------------------------------------------------------------------

def _model(args):
    if args.model:
        if args.flops_per_sample or args.param_bytes:
            raise ValueError("give -model or -flops_per_sample/-param_bytes, not both")
        costs = measure(args.model, runs=max(1, args.runs))
        return costs, (args.node_tflops * 1e12 if args.node_tflops else None)
    if args.flops_per_sample or args.param_bytes:
        if not (args.flops_per_sample and args.param_bytes):
            raise ValueError("-flops_per_sample and -param_bytes go together")
        costs = ModelCosts.from_totals(args.flops_per_sample, int(args.param_bytes),
                                       fwd_fraction=args.fwd_fraction, name="model")
    else:
        costs = hep_cnn()
    return costs, (args.node_tflops or 2.0) * 1e12


def _config(args, compare=False):
    costs, node_flops = _model(args)
    net = network_profile(args.network,
                          alpha=args.alpha_us * 1e-6 if args.alpha_us is not None else None,
                          beta=args.beta_gbs * 1e9 if args.beta_gbs is not None else None)
    nodes = args.nodes if args.nodes is not None else (128 if compare else 64)
    groups = args.groups if args.groups is not None else (4 if compare else 1)
    servers = args.servers if args.servers is not None else (2 if compare else 0)
    stragglers = args.stragglers if args.stragglers is not None else (0.01 if compare else 0.0)
    return ScaleConfig(
        model=costs, nodes=nodes, groups=groups, servers=servers, batch=args.batch,
        node_flops=node_flops,
        update_bytes_per_s=args.update_gbs * 1e9 if args.update_gbs else None, network=net,
        first_bucket_bytes=int(args.first_bucket_mb * MiB), bucket_bytes=int(args.bucket_mb * MiB),
        straggler_fraction=stragglers, slowdown=args.slowdown, jitter=args.jitter,
        max_staleness=args.max_staleness, iterations=args.iterations, warmup=args.warmup,
        seed=args.seed)


def _write_json(path, payload):
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=1, default=str)


def main(argv=None, out=None):
    """Entry point of `crema scale`; returns the exit status."""
    out = out or sys.stdout
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # -h or a bad flag: argparse has printed why; return, not exit
        return exc.code if isinstance(exc.code, int) else 2
    try:
        if args.paper:
            rows, reference = paper.run(iterations=args.iterations, warmup=args.warmup,
                                        seed=args.seed)
            print_paper(rows, reference, out)
            payload = {"published": paper.PUBLISHED,
                       "single_node": reference.to_dict(),
                       "rows": [{"label": r["label"], "pflops": r["pflops"],
                                 "efficiency": r["efficiency"], "result": r["result"].to_dict()}
                                for r in rows]}
        elif args.compare:
            config = _config(args, compare=True)
            reference = single_node(config)
            results = []
            for label, cfg in comparison(config):
                r = simulate(cfg)
                results.append((label, r, scaling_efficiency(r, reference)))
            print(f"{config.nodes} nodes; {config.model.name}; "
                  f"{simulate_note(config)}", file=out)
            _describe(config, out)
            print_compare(results, out)
            print("slow nodes: " + ", ".join(f"{l} {r.stragglers}" for l, r, _ in results),
                  file=out)
            print("model predictions; eff/1 node = throughput / (nodes x one node's throughput)",
                  file=out)
            payload = {"single_node": reference.to_dict(),
                       "rows": [{"label": l, "efficiency": e, "result": r.to_dict()}
                                for l, r, e in results]}
        else:
            config = _config(args)
            result = simulate(config)
            reference = single_node(config)
            print_result(result, config, out, reference=reference, per_group=args.per_group)
            payload = {"result": result.to_dict(), "single_node": reference.to_dict(),
                       "efficiency": scaling_efficiency(result, reference)}
    except ValueError as exc:
        print(f"crema scale: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        _write_json(args.json, payload)
    return 0


def simulate_note(config):
    count = config.straggler_count
    frac = config.straggler_fraction
    what = (f"{count} slow node(s)" if count is not None else
            f"{100 * frac:g}% of workers slow" if frac else "no slow nodes")
    return f"{what} (x{config.slowdown:g}), jitter sigma {config.jitter:g}, seed {config.seed}"


if __name__ == "__main__":
    sys.exit(main())
