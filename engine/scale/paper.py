"""The headline of Kurth et al., "Deep Learning at 15PF" (SC17), run through the simulator.

What is taken from the paper and its press (see /work/shared/notes/hybrid-anchors.md):
  * about 2 TFLOP/s on one Cori Phase-II node (Xeon Phi 7250), the per-node compute rate used;
  * the HEP CNN topology (FLOPs computed analytically in calibrate.hep_cnn);
  * about 9,600 nodes, hybrid: synchronous groups, asynchronous parameter servers across them.
Published results, printed ONLY as the reference beside the prediction:
  * sustained 11.41-13.27 PFLOP/s, peak 11.73-15.07 PFLOP/s (abstract, arXiv 1708.05256);
  * about 75 % scaling efficiency, a 7,205x speed-up on 9,600 nodes (InfoQ, 2017).

ASSUMPTIONS (not from the paper; this module's choices, stated so they can be argued with):
  * batch 8 per node (the exact per-node HEP batch at scale is not confirmed here);
  * 8 groups and 8 parameter servers: 8 x 1,199 workers + 8 servers = 9,600 nodes (the exact
    group and server counts at scale are not confirmed here);
  * per-iteration compute jitter: lognormal, sigma 0.05 (5 % node-to-node variation of each
    iteration's compute time; OS noise, turbo and memory effects), no permanently slow node;
  * the Cray Aries network profile (engine.scale.network.ARIES) and the default update speed.
Rows beside the headline vary one assumption at a time, so the sensitivity is visible.
Nothing here is fitted to the published figures.
"""
from dataclasses import replace

from .calibrate import hep_cnn
from .network import ARIES
from .sim import ScaleConfig, simulate, single_node, scaling_efficiency

NODE_FLOPS = 2.0e12
NODES = 9600
BATCH = 8
GROUPS = 8
SERVERS = 8
JITTER = 0.05

PUBLISHED = {
    "sustained_pflops": (11.41, 13.27),
    "peak_pflops": (11.73, 15.07),
    "scaling_efficiency": 0.75,
    "speedup": 7205,
    "nodes": 9600,
    "sources": "sustained/peak: Kurth et al. SC17 abstract (arXiv 1708.05256); 75 % / 7,205x: "
               "InfoQ 2017-09 (press)",
}


def headline_config(iterations=30, warmup=5, seed=0):
    return ScaleConfig(model=hep_cnn(), nodes=NODES, groups=GROUPS, servers=SERVERS, batch=BATCH,
                       node_flops=NODE_FLOPS, network=ARIES, jitter=JITTER,
                       iterations=iterations, warmup=warmup, seed=seed)


def scenarios(iterations=30, warmup=5, seed=0):
    """[(label, ScaleConfig)]: the headline first, then one assumption changed per row."""
    base = headline_config(iterations, warmup, seed)
    sync = replace(base, groups=1, servers=0)
    return [
        (f"hybrid {GROUPS}x{base.group_size}+{SERVERS} PS, jitter 5% (headline)", base),
        ("hybrid, no jitter", replace(base, jitter=0.0)),
        ("hybrid, jitter 10%", replace(base, jitter=0.10)),
        (f"fully synchronous 1x{sync.group_size}, jitter 5%", sync),
        ("hybrid, jitter 5% + 1% of nodes 2x slow", replace(base, straggler_fraction=0.01)),
    ]


def run(iterations=30, warmup=5, seed=0):
    """Simulate every scenario. Returns (rows, reference) where each row is a dict with the
    label, the Result, sustained PFLOP/s and scaling efficiency vs one node."""
    rows = []
    reference = None
    for label, config in scenarios(iterations, warmup, seed):
        result = simulate(config)
        ref = single_node(config)
        if reference is None:
            reference = ref
        rows.append({"label": label, "result": result,
                     "pflops": result.flops_per_s / 1e15,
                     "efficiency": scaling_efficiency(result, ref),
                     "single_node_tflops": ref.flops_per_s / 1e12})
    return rows, reference
