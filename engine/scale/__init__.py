"""engine.scale: a discrete-event simulation (SimPy) of crema's hybrid training protocol at
cluster scale. See engine/scale/sim.py for the model, network.py for the communication costs,
calibrate.py for what an iteration costs, paper.py for the "Deep Learning at 15PF" reproduction
and cli.py for the `crema scale` command."""
from .calibrate import LayerCost, ModelCosts, Timing, hep_cnn, measure, costs_from_net
from .network import ARIES, LOCAL, NetworkProfile, profile
from .sim import (ScaleConfig, Result, GroupStats, simulate, single_node, scaling_efficiency,
                  make_buckets, balanced_slices)
from .predict import predict_for_ranks

__all__ = ["LayerCost", "ModelCosts", "Timing", "hep_cnn", "measure", "costs_from_net",
           "ARIES", "LOCAL", "NetworkProfile", "profile", "ScaleConfig", "Result", "GroupStats",
           "simulate", "single_node", "scaling_efficiency", "make_buckets", "balanced_slices",
           "predict_for_ranks"]
