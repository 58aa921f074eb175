"""SolverHooks: the named places where code outside the solver joins a training run.

Every solver type calls the same hooks at the same points of Solver.step (see base.py):

  on_init(solver)            once, before the first iteration of solve()/step() (broadcast weights)
  on_start(solver)           each iteration, after the test, before the forward/backward passes
  on_gradients_ready(solver) after the iter_size backward passes; the place to reduce gradients
                             across processes (the finite check runs after it, so every rank sees
                             the same reduced values and stops together)
  apply_update(solver)       return True to take over the whole update (a parameter server does
                             it); the solver then skips its own rule and `data -= diff`
  before_update(solver)      the diffs hold the steps, just before `data -= diff`
  after_update(solver)       the weights are updated, before iter += 1's snapshot/test checks
  on_test(solver)            return False to skip testing on this process (non-root ranks)
  on_snapshot(solver)        return False to skip writing a snapshot on this process
  on_display(solver)         return False to skip Caffe's display lines on this process

Hooks run in the order they were added. A hook object only overrides what it needs.
"""


class SolverHooks:
    def on_init(self, solver):
        pass

    def on_start(self, solver):
        pass

    def on_gradients_ready(self, solver):
        pass

    def apply_update(self, solver):
        return False

    def before_update(self, solver):
        pass

    def watches_steps(self):
        """Whether before_update does anything: while no hook does, the solver may subtract the
        steps in the same native pass that computes them (there is no moment between the two)."""
        return type(self).before_update is not SolverHooks.before_update

    def after_update(self, solver):
        pass

    def on_test(self, solver):
        return True

    def on_snapshot(self, solver):
        return True

    def on_display(self, solver):
        return True


class CallbackHooks(SolverHooks):
    """pycaffe's add_callback(on_start, on_gradients_ready) (plus before_update): callables with
    no arguments."""

    def __init__(self, on_start=None, on_gradients_ready=None, before_update=None):
        self._start, self._ready, self._before = on_start, on_gradients_ready, before_update

    def on_start(self, solver):
        if self._start is not None:
            self._start()

    def on_gradients_ready(self, solver):
        if self._ready is not None:
            self._ready()

    def before_update(self, solver):
        if self._before is not None:
            self._before()

    def watches_steps(self):
        return self._before is not None


class HookList:
    """The solver's hooks; calling a method calls it on every hook in order. For the hooks that
    answer (apply_update, on_test, on_snapshot, on_display) the answers combine: apply_update is
    True if any hook took the update; the others are True only if no hook said False."""

    def __init__(self):
        self.hooks = []

    def add(self, hooks):
        if not isinstance(hooks, SolverHooks):
            raise TypeError(f"solver hooks must derive from engine.solvers.SolverHooks, got "
                            f"{type(hooks).__name__}")
        self.hooks.append(hooks)
        return hooks

    def _each(self, name, solver):
        return [getattr(h, name)(solver) for h in self.hooks]

    def on_init(self, solver):
        self._each("on_init", solver)

    def on_start(self, solver):
        self._each("on_start", solver)

    def on_gradients_ready(self, solver):
        self._each("on_gradients_ready", solver)

    def apply_update(self, solver):
        return any(self._each("apply_update", solver))

    def before_update(self, solver):
        self._each("before_update", solver)

    def watches_steps(self):
        return any(h.watches_steps() for h in self.hooks)

    def after_update(self, solver):
        self._each("after_update", solver)

    def on_test(self, solver):
        return all(answer is not False for answer in self._each("on_test", solver))

    def on_snapshot(self, solver):
        return all(answer is not False for answer in self._each("on_snapshot", solver))

    def on_display(self, solver):
        return all(answer is not False for answer in self._each("on_display", solver))
