"""Caffe's solvers (pycaffe names): get_solver(path_or_text_or_param) picks the class by
SolverParameter.type; SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver, AdaDeltaSolver and
AdamSolver take the same argument. See base.py (the training loop, tests, snapshots), updates.py
(the update rules), lr_policy.py and snapshot.py (file layouts)."""
from .base import Solver, get_solver, register_solver, solver_class, solver_type_list
from .hooks import SolverHooks
from .lr_policy import learning_rate
from .updates import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver, RMSPropSolver,
                      SGDSolver)

__all__ = ["Solver", "SolverHooks", "get_solver", "register_solver", "solver_class",
           "solver_type_list", "learning_rate",
           "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver", "AdaDeltaSolver",
           "AdamSolver"]
