"""engine.scale: the alpha-beta cost model, the SimPy simulation of the hybrid protocol, the
calibration, predict_for_ranks and the `crema scale` entry point (engine.scale.cli.main)."""
import json
import math
import re
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("simpy")

from engine.scale import (ModelCosts, NetworkProfile, ScaleConfig, Timing,  # noqa: E402
                          balanced_slices, hep_cnn, make_buckets, predict_for_ranks, profile,
                          scaling_efficiency, simulate, single_node)
from engine.scale import cli, paper  # noqa: E402
from engine.scale.sim import MiB  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LENET = REPO / "examples" / "mnist" / "lenet_train.prototxt"

NET = NetworkProfile("test", alpha=1e-6, beta=1e9)
FAST = NetworkProfile("fast", alpha=1e-6, beta=1e10)   # for the simulations: compute-bound


def small_model():
    """A HEP-like model: 1 GFLOP/sample, 4 MB of parameters, gradients produced uniformly
    (40 ms of compute per iteration at batch 8 and 200 GFLOP/s)."""
    return ModelCosts.from_totals(1e9, 4_000_000, name="small")


def config(**kw):
    base = dict(model=small_model(), nodes=8, groups=1, servers=0, batch=8, node_flops=2e11,
                network=FAST, iterations=20, warmup=3, seed=1)
    base.update(kw)
    return ScaleConfig(**base)


# -- network cost model -----------------------------------------------------------------------

def test_point_to_point_is_alpha_plus_bytes_over_beta():
    assert NET.p2p(1e6) == pytest.approx(1e-6 + 1e-3)
    assert NET.p2p(0) == pytest.approx(1e-6)


def test_allreduce_formulas_match_hand_values():
    a, m = 1e-6, 4e6
    # ring, n = 4: 2(n-1) alpha + 2 (n-1)/n m / beta
    assert NET.allreduce_ring(4, m) == pytest.approx(6 * a + 2 * 0.75 * 4e-3)
    # recursive doubling, n = 8: log2(8) (alpha + m/beta)
    assert NET.allreduce_recursive_doubling(8, 1000) == pytest.approx(3 * (a + 1e-6))
    # Rabenseifner, n = 8: 2 log2(8) alpha + 2 (7/8) m / beta
    assert NET.allreduce_rabenseifner(8, 8e6) == pytest.approx(6 * a + 2 * 7 / 8 * 8e-3)
    # n = 6 is not a power of two: p = 4 plus the fold, 2 (alpha + m/beta)
    assert NET.allreduce_rabenseifner(6, m) == pytest.approx(
        4 * a + 2 * 0.75 * 4e-3 + 2 * (a + 4e-3))
    assert NET.allreduce(1, m) == 0.0 and NET.bcast(1, m) == 0.0


def test_reduction_arithmetic_term():
    net = NetworkProfile("g", alpha=0.0, beta=1e9, gamma=1e-10)
    # ring combines (n-1)/n of the vector on each rank
    assert net.allreduce_ring(4, 1e6) == pytest.approx(2 * 0.75 * 1e-3 + 0.75 * 1e6 * 1e-10)


def test_algorithm_choice_by_size_as_mpich():
    assert NET.allreduce_choice(64, 1024)[0] == "recursive_doubling"
    assert NET.allreduce_choice(1024, 25 * MiB)[0] == "rabenseifner"
    # n = 3, long message: Rabenseifner would pay the fold (3 m/beta), ring only 4/3 m/beta
    name, t = NET.allreduce_choice(3, 1e6)
    assert name == "ring" and t == pytest.approx(4e-6 + 4 / 3 * 1e-3)
    assert NET.allreduce(3, 1e6) == pytest.approx(t)


def test_bcast_formulas_and_choice():
    assert NET.bcast_binomial(8, 100) == pytest.approx(3 * (1e-6 + 100 / 1e9))
    assert NET.bcast_scatter_ring_allgather(8, 8e6) == pytest.approx(
        (3 + 7) * 1e-6 + 2 * 7 / 8 * 8e-3)
    assert NET.bcast_choice(8, 100)[0] == "binomial"          # short message
    # long message to many ranks: scatter + allgather beats the binomial tree's log n copies
    name, t = NET.bcast_choice(1024, 8e6)
    assert name.startswith("scatter") and t < NET.bcast_binomial(1024, 8e6) / 4


def test_profiles_and_overrides():
    aries = profile("aries")
    assert aries.alpha == pytest.approx(1.3e-6) and 8e9 <= aries.beta <= 10e9
    assert profile("local", beta=2e9).beta == 2e9
    with pytest.raises(ValueError, match="unknown network"):
        profile("token-ring")
    with pytest.raises(ValueError):
        profile("aries", beta=0)


# -- model costs, buckets, slices ---------------------------------------------------------------

def test_hep_cnn_flops_and_params_by_hand():
    m = hep_cnn()
    macs = (224 * 224 * 128 * 3 * 9 + 112 * 112 * 128 * 128 * 9 + 56 * 56 * 128 * 128 * 9
            + 28 * 28 * 128 * 128 * 9 + 14 * 14 * 128 * 128 * 9 + 128 * 2)
    assert m.fwd_flops_per_sample == pytest.approx(2 * macs)
    assert m.flops_per_sample == pytest.approx(3 * 2 * macs)
    params = (3 * 9 * 128 + 128) + 4 * (128 * 128 * 9 + 128) + (128 * 2 + 2)
    assert m.param_bytes == 4 * params
    chunks = m.gradient_chunks()
    assert [c[0] for c in chunks][0] == 4 * 258        # backward yields the FC layer first
    assert chunks[-1][1] == pytest.approx(1.0)         # conv1's gradient is ready last


def test_buckets_follow_ddp_rule():
    # whole blobs in production order; a bucket closes once it reaches its cap
    chunks = [(100, 0.1), (600, 0.2), (500, 0.5), (3000, 0.9), (10, 1.0)]
    assert make_buckets(chunks, first_cap=500, cap=2000) == [(700, 0.2), (3500, 0.9), (10, 1.0)]
    # a uniform stream is cut exactly at the caps
    out = make_buckets([(10 * MiB, None)], first_cap=1 * MiB, cap=4 * MiB)
    assert [b for b, _ in out] == [1 * MiB, 4 * MiB, 4 * MiB, 1 * MiB]
    assert out[0][1] == pytest.approx(0.1) and out[-1][1] == pytest.approx(1.0)


def test_server_slices_are_byte_balanced():
    s = balanced_slices(4 * 1001, 4)
    assert sum(s) == 4 * 1001 and max(s) - min(s) == 4


# -- simulation --------------------------------------------------------------------------------

def test_time_shares_add_up_and_compute_dominates_a_compute_bound_model():
    r = simulate(config(nodes=16))
    assert r.share_compute + r.share_comm + r.share_wait == pytest.approx(1.0)
    assert r.share_compute > 0.9
    f, b, _ = config().compute_times()
    assert r.iteration_mean_s > f + b        # the last bucket's allreduce is exposed


def test_straggler_hurts_sync_much_more_than_hybrid():
    sync = config(nodes=33)
    hyb = config(nodes=33, groups=4, servers=1)           # 4 groups of 8 + 1 server
    slow = dict(straggler_count=1, slowdown=2.0)
    s0, s1 = simulate(sync), simulate(replace(sync, **slow))
    h0, h1 = simulate(hyb), simulate(replace(hyb, **slow))
    assert s1.stragglers == h1.stragglers == 1
    # one slow node stalls the whole synchronous world ...
    assert s1.iteration_mean_s / s0.iteration_mean_s > 1.8
    assert s1.throughput / s0.throughput < 0.56
    # ... but only its own group in the hybrid
    assert h1.throughput / h0.throughput > 0.8
    assert h1.iteration_median_s / h0.iteration_median_s < 1.1
    slow_groups = [g for g in h1.per_group if g.slow_members]
    assert len(slow_groups) == 1 and slow_groups[0].iterations < min(
        g.iterations for g in h1.per_group if not g.slow_members)


def test_mean_staleness_is_near_groups_minus_one():
    for groups in (2, 4, 6):
        r = simulate(config(nodes=groups * 4 + 2, groups=groups, servers=2, jitter=0.05,
                            iterations=40))
        assert r.mode == "hybrid"
        assert abs(r.staleness_mean - (groups - 1)) < 0.3, (groups, r.staleness_mean)
        assert sum(r.staleness_hist.values()) > 0


def test_max_staleness_bounds_observed_staleness():
    base = config(nodes=9, groups=8, servers=1, jitter=0.2, straggler_count=2, slowdown=3.0,
                  iterations=25)
    free = simulate(base)
    assert free.staleness_max > 7           # a slow group sees fast groups lap it
    for bound in (0, 1, 3, 7):
        r = simulate(replace(base, max_staleness=bound))
        assert r.staleness_max <= bound, (bound, r.staleness_hist)
        assert r.throughput > 0
    # the bound costs throughput when it binds
    assert simulate(replace(base, max_staleness=1)).throughput < free.throughput


def test_sync_throughput_grows_monotonically_and_sublinearly():
    results = {n: simulate(config(nodes=n, iterations=8, warmup=1)) for n in
               (1, 2, 4, 16, 64, 256, 1024)}
    nodes = sorted(results)
    tput = [results[n].throughput for n in nodes]
    assert all(b > a for a, b in zip(tput, tput[1:]))
    per_node = [t / n for t, n in zip(tput, nodes)]
    assert all(b < a for a, b in zip(per_node, per_node[1:]))
    assert tput[-1] < nodes[-1] * tput[0]


def test_asynchronous_servers_queue_under_a_large_model():
    big = ModelCosts.from_totals(2e9, 200_000_000, name="big")
    r = simulate(config(model=big, nodes=17, groups=16, servers=1, iterations=10))
    assert r.mode == "asynchronous" and r.group_size == 1
    assert max(r.server_busy) > 0.9          # the one server is the bottleneck
    assert r.share_wait > 0.3                # and the groups wait in its queue


def test_same_seed_same_result_other_seed_differs():
    c = config(nodes=13, groups=3, servers=1, jitter=0.1, straggler_fraction=0.1)
    a, b = simulate(c).to_dict(), simulate(c).to_dict()
    assert a == b
    assert simulate(replace(c, seed=2)).to_dict() != a


def test_invalid_worlds_are_refused():
    with pytest.raises(ValueError, match="parameter server"):
        simulate(config(groups=2, servers=0))
    with pytest.raises(ValueError):
        simulate(config(nodes=3, groups=4, servers=1))
    with pytest.raises(ValueError, match="node_flops"):
        simulate(config(node_flops=None))


def test_idle_nodes_are_reported():
    r = simulate(config(nodes=10, groups=4, servers=1))     # 9 workers -> 4 groups of 2, 1 idle
    assert r.idle_nodes == 1 and r.group_size == 2 and r.notes


def test_scaling_efficiency_against_one_node():
    c = config(nodes=64, jitter=0.05)
    ref = single_node(c)
    eff = scaling_efficiency(simulate(c), ref)
    assert 0.5 < eff < 1.0


# -- calibration and predictions for measured runs ------------------------------------------------

def test_predict_for_ranks_scales_compute_when_oversubscribed():
    timed = small_model().with_timing(Timing(batch=8, forward_s=0.01, backward_s=0.02))
    two = predict_for_ranks(timed, 2, cores=2, iterations=5, warmup=1)
    four = predict_for_ranks(timed, 4, cores=2, iterations=5, warmup=1)
    assert two.iteration_mean_s > 0.03
    assert four.iteration_mean_s / two.iteration_mean_s == pytest.approx(2.0, rel=0.05)
    assert any("compute x2.00" in n for n in four.notes)
    hyb = predict_for_ranks(timed, 5, groups=2, servers=1, cores=8, iterations=5, warmup=1)
    assert hyb.mode == "hybrid" and hyb.staleness_mean is not None
    with pytest.raises(ValueError, match="equal group"):
        predict_for_ranks(timed, 4, groups=2, servers=1)


def test_measure_a_real_net_and_predict():
    from engine.scale.calibrate import measure
    costs = measure(LENET, runs=2, warmup=1)
    t = costs.timing
    assert t.batch == 64 and t.forward_s > 0 and t.backward_s > 0 and t.update_s > 0
    # LeNet: conv1 20x(1x5x5)+20, conv2 50x(20x5x5)+50, ip1 500x800+500, ip2 10x500+10
    assert costs.param_bytes == 4 * (520 + 25050 + 400500 + 5010)
    assert costs.fwd_flops_per_sample == pytest.approx(2 * (24 * 24 * 20 * 25 + 8 * 8 * 50 * 500
                                                            + 800 * 500 + 500 * 10))
    r = predict_for_ranks(costs, 1, cores=1, iterations=3, warmup=1)
    assert r.iteration_mean_s == pytest.approx(t.forward_s + t.backward_s + t.update_s,
                                               rel=1e-6)


# -- command line -----------------------------------------------------------------------------

def test_cli_single_run_prints_a_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = cli.main(["-nodes", "10", "-groups", "2", "-servers", "2", "-iterations", "5",
                   "-jitter", "0.05", "-per_group", "-json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    assert "hybrid: 10 nodes = 2 group(s) x 4 workers + 2 server(s)" in text
    for word in ("iteration time", "throughput", "sustained", "staleness (mean / max)",
                 "compute / communication / waiting", "scaling efficiency"):
        assert word in text
    data = json.loads(out.read_text())
    assert data["result"]["groups"] == 2 and len(data["result"]["per_group"]) == 2


def test_cli_compare_prints_three_protocols(capsys):
    rc = cli.main(["--compare", "-nodes", "24", "-iterations", "5", "-warmup", "1"])
    text = capsys.readouterr().out
    assert rc == 0
    rows = {name: line for line in text.splitlines()
            for name in ("fully synchronous", "hybrid", "fully asynchronous")
            if line.startswith(name)}
    assert len(rows) == 3
    assert "1x24+0" in rows["fully synchronous"] and "22x1+2" in rows["fully asynchronous"]


def test_cli_reports_bad_worlds(capsys):
    assert cli.main(["-nodes", "4", "-groups", "2"]) == 2
    assert "parameter server" in capsys.readouterr().err


def test_paper_mode_prints_pflops_in_a_sane_range(tmp_path, capsys):
    out = tmp_path / "paper.json"
    rc = cli.main(["-paper", "-iterations", "12", "-warmup", "2", "-json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    m = re.search(r"headline prediction: ([\d.]+) PFLOP/s sustained on 9600 nodes, "
                  r"scaling efficiency ([\d.]+)%", text)
    assert m, text
    pflops, eff = float(m.group(1)), float(m.group(2))
    # a model, not a fit: it only has to land in a plausible band around the published figure
    assert 5 < pflops < 20 and 40 < eff < 100
    assert "11.41-13.27 PFLOP/s" in text and "reference" in text
    data = json.loads(out.read_text())
    # the printed figure is the simulation's, not the published one
    assert data["rows"][0]["pflops"] == pytest.approx(pflops, abs=0.006)
    assert data["rows"][0]["result"]["nodes"] == paper.NODES
    assert not math.isclose(pflops, 11.41) and not math.isclose(pflops, 13.27)
