"""What every backend shares: the plan of a run, its schedule (which examples each update
uses, when to log), the record of R runs, the up-front memory estimate, the loss cap and
the choice of backend. The bottom of descent.engines: it imports no backend.

Model y_hat = X w + b, loss `scale * mean((y_hat - y)^2)` over a batch (scale 1/2 is the
d2l "half squared" loss, 1 is MSELoss); the batch size is the only thing that makes a run
full-batch GD (batch = N), SGD (batch = 1) or mini-batch SGD.

A state is *sound* when its parameters are finite and its whole-set loss is finite and at
most the run's limit: blowup x its starting loss, and `loss_cap` (the loss whose squared
residuals overflow the run's dtype). A run *diverges* at its first unsound update; every
backend applies this one rule (tests/test_kernel.py and test_engine.py hold them to it).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from descent.io import UserError
from descent.parallel import in_parallel

# The affine engine (descent.engines.torch_backends) works in chunks of at most this many bytes of
# update maps and gathered rows, which bounds its memory whatever the run's length.
CHUNK_BYTES = 1 << 28


def epoch_batches(n_examples: int, batch_size: int, drop_last: bool) -> tuple[int, int]:
    """(full batches, size of the short last batch) of one epoch: the short batch holds the
    N mod m examples left over, and is 0 (no batch) when there are none or drop_last."""
    full, rest = divmod(n_examples, batch_size)
    return full, (0 if drop_last else rest)


def total_updates(plan: "Plan") -> int:
    """Updates of a run: full batches each epoch, plus a short one unless drop_last."""
    full, short = epoch_batches(plan.n_examples, min(plan.batch_size, plan.n_examples),
                                plan.drop_last)
    return plan.epochs * (full + (short > 0))


def memory_needed(n_examples: int, n_features: int, plan: "Plan", itemsize: int,
                  runs: int = 1, held: int | None = None) -> int:
    """Bytes `runs` runs of one plan need at their peak, estimated from the plan.

    `held` runs at a time (default: all; the compiled kernel with a lazy schedule holds
    one per core) hold every epoch's order (epochs x N indices, none when the rows are read
    in order); each run's parameters and loss at every logging point are kept; the torch
    backends add a few numbers per update, and engine affine one chunk for all runs, at
    most CHUNK_BYTES.
    """
    p1 = n_features + 1
    updates = total_updates(plan)
    # at most one point an update (a batch passing several multiples of log_every logs once)
    points = min(updates, updates * min(plan.batch_size, n_examples) // plan.log_every
                 + plan.epochs) + 1
    orders = 0 if in_order(plan) else \
        plan.epochs * n_examples * np.dtype(index_dtype(n_examples)).itemsize
    per_update = 24 if held is None else 0  # the torch backends index arrays per update
    # watching for a target at batch 1: p+4 float64 figures of every row (compiled.Watch)
    watched = n_examples * (p1 + 3) * 8 \
        if plan.target is not None and plan.batch_size == 1 else 0
    return (min(runs, runs if held is None else held) * orders
            + runs * points * (p1 * itemsize * 2 + 16)
            + updates * per_update + watched + CHUNK_BYTES)


@dataclass(frozen=True)
class Plan:
    """How one run walks through the data."""
    n_examples: int
    batch_size: int
    epochs: int
    lr: float
    gradient_scale: float = 0.5  # scale of the loss whose gradient drives the update
    shuffle: bool = True
    drop_last: bool = False
    log_every: int = 100     # examples between logged losses (d2l: 100); epoch ends too
    loss_scale: float = 0.5  # scale of the whole-set loss recorded at logging points
    blowup: float = 1e6      # a logged loss above blowup x the initial loss counts as diverged
    # Each example of each batch drawn independently and uniformly (shuffle then does not
    # apply): the sampling under which descent.theory's expected loss curve is exact.
    with_replacement: bool = False
    # A whole-set loss (loss_scale convention) each run watches for: Runs.reached_at holds
    # the first update at or below it, found exactly without logging every update (the
    # sweep's steps to target; compiled engine).
    target: float | None = None


@dataclass
class Schedule:
    """Which examples each update uses, and after which updates to log.

    Every epoch cuts its order into the same batches (`epoch_sizes`), so nothing is kept per
    update: the per-update figures the torch backends index are derived when asked.
    The example orders are either all here (`order`) or drawn run by run when a backend
    needs them (`orders`), from each run's generator: then a run's orders live only while
    it runs, and R runs hold the memory of the few that run at once, not R x epochs x N.
    """
    order: np.ndarray | None     # (epochs, N) example indices ((R, epochs, N) for R runs);
                                 # None: drawn by `orders`
    epoch_sizes: np.ndarray      # (batches an epoch,) examples in each batch of an epoch
    epochs: int
    log_after: np.ndarray        # (points,) update counts (1-based) after which to log
    plan: Plan | None = None     # what `orders` draws for
    generators: list | None = None  # each run's generator, never advanced (copies draw)

    @property
    def updates(self) -> int:
        return self.epochs * len(self.epoch_sizes)

    @functools.cached_property
    def log_updates(self) -> np.ndarray:
        """Update counts at the logging points, the start (0) first."""
        return np.concatenate([np.zeros(1, np.int64), self.log_after])

    def examples_after(self, updates: np.ndarray) -> np.ndarray:
        """Examples seen after each of these update counts."""
        per_epoch, updates = len(self.epoch_sizes), np.asarray(updates, np.int64)
        within = np.r_[0, np.cumsum(self.epoch_sizes)]
        return (updates // per_epoch) * within[-1] + within[updates % per_epoch]

    @functools.cached_property
    def batch_sizes(self) -> np.ndarray:
        """(updates,) examples in each update."""
        return np.tile(self.epoch_sizes, self.epochs)

    @functools.cached_property
    def starts(self) -> np.ndarray:
        """(updates,) offset of each batch within its epoch's order."""
        return np.tile(np.r_[0, np.cumsum(self.epoch_sizes)[:-1]], self.epochs)

    @functools.cached_property
    def epochs_of(self) -> np.ndarray:
        """(updates,) epoch (0-based) of each update."""
        return np.repeat(np.arange(self.epochs), len(self.epoch_sizes))

    def orders(self, runs: slice) -> np.ndarray:
        """(k, epochs, N) orders of these runs: held, or drawn now (the same every time:
        each from a copy of its run's generator, as make_schedule draws them)."""
        if self.order is not None:
            return self.order[runs]
        chosen = self.generators[runs]
        drawn = np.empty((len(chosen), self.plan.epochs, self.plan.n_examples),
                         index_dtype(self.plan.n_examples))
        for k, generator in enumerate(chosen):
            shuffled_order(self.plan, copy.deepcopy(generator), out=drawn[k])
        return drawn

    def part(self, runs: slice) -> "Schedule":
        """The schedule of these runs only (what a block of runs sent elsewhere needs)."""
        if self.order is not None:
            return dataclasses.replace(self, order=self.order[runs])
        return dataclasses.replace(self, generators=self.generators[runs])

    def drawn(self) -> "Schedule":
        """This schedule with every run's orders held (the torch backends index them)."""
        if self.order is not None:
            return self
        return dataclasses.replace(self, order=self.orders(slice(None)))


def index_dtype(n_examples: int) -> type:
    """Example indices in 4 bytes where they fit (half the memory of int64)."""
    return np.int32 if n_examples < 2**31 else np.int64


def in_order(plan: Plan) -> bool:
    """Whether the rows are read in order, with no order drawn: unshuffled, or a full batch
    (GD), where an order would change only the rounding of one sum. GD is defined so: it
    reads memory sequentially, and holds no epochs x N permutations."""
    return not plan.with_replacement and (not plan.shuffle
                                          or plan.batch_size >= plan.n_examples)


def make_schedule(plan: Plan, generators, lazy: bool = False) -> Schedule:
    """The schedule of one run (a Generator: order (epochs, N)) or of R runs (a list of R
    Generators: order (R, epochs, N)); only the example orders differ between runs. Rows
    read in order (`in_order`) share one read-only arange, whatever R and the epochs.
    lazy: R runs' orders are drawn when they run (Schedule.orders), not here."""
    if isinstance(generators, np.random.Generator):
        return layout(plan, shuffled_order(plan, generators))
    shape = (len(generators), plan.epochs, plan.n_examples)
    if in_order(plan):
        return layout(plan, np.broadcast_to(np.arange(plan.n_examples,
                                                      dtype=index_dtype(plan.n_examples)),
                                            shape))
    if lazy:
        return dataclasses.replace(layout(plan, None), plan=plan,
                                   generators=list(generators))
    orders = np.empty(shape, index_dtype(plan.n_examples))

    def fill(run: int) -> None:
        shuffled_order(plan, generators[run], out=orders[run])

    # numpy's shuffles release the GIL: the runs' orders are drawn in parallel, in place
    # (no per-run copies to stack), each from its own generator, so with the same bits.
    in_parallel(fill, len(generators))
    return layout(plan, orders)


def shuffled_order(plan: Plan, generator: np.random.Generator, out=None) -> np.ndarray:
    """(epochs, N) example indices: a fresh permutation per epoch, drawn in epoch order
    (with_replacement: N independent uniform draws per epoch; in_order: the rows in order).
    The draws do not depend on the indices' dtype (tests/test_seeds.py)."""
    n = plan.n_examples
    if in_order(plan) and out is None:
        return np.broadcast_to(np.arange(n, dtype=index_dtype(n)), (plan.epochs, n))
    order = np.empty((plan.epochs, n), index_dtype(n)) if out is None else out
    if plan.with_replacement:
        order[...] = generator.integers(0, n, size=order.shape)
        return order
    order[...] = np.arange(n)
    return order if in_order(plan) else generator.permuted(order, axis=1, out=order)


def epoch_sizes(plan: Plan) -> list[int]:
    """The examples of each update of an epoch (its full batches, then the short one)."""
    size = min(plan.batch_size, plan.n_examples)
    full, short = epoch_batches(plan.n_examples, size, plan.drop_last)
    return [size] * full + ([short] if short else [])


def layout(plan: Plan, order: np.ndarray | None, log_after=None) -> Schedule:
    """The schedule of these orders: logging after every log_every examples and at each
    epoch's end, or after the updates log_after names."""
    sizes = np.array(epoch_sizes(plan), np.int64)
    if log_after is None:
        log_after = logging_points(sizes, plan.epochs, plan.log_every)
    return Schedule(order, sizes, plan.epochs, log_after)


def logging_points(sizes: np.ndarray, epochs: int, log_every: int) -> np.ndarray:
    """Update counts (1-based) after which the seen examples pass a multiple of log_every,
    and each epoch's last: O(points) memory, not O(updates), whatever the run's length.

    In an epoch of full batches of m (then a short one, its last) that starts after `base`
    examples, the multiple t * log_every is passed by batch ceil((t * log_every - base) / m).
    """
    if not len(sizes):  # drop_last with a batch above N: no updates
        return np.zeros(0, np.int64)
    m, per_epoch, total = int(sizes[0]), len(sizes), int(sizes.sum())
    full = per_epoch - (per_epoch > 1 and sizes[-1] != m)  # batches of m an epoch
    points = []
    for epoch in range(epochs):
        base = epoch * total
        first, last = base // log_every + 1, (base + full * m) // log_every
        multiples = np.arange(first, last + 1, dtype=np.int64) * log_every
        batches = np.unique(-((base - multiples) // m))  # ceil((t L - base) / m)
        points.append(epoch * per_epoch + np.r_[batches[batches < per_epoch], per_epoch])
    return np.concatenate(points).astype(np.int64) if points else np.zeros(0, np.int64)


def loss_cap(dtype, n, loss_scale) -> float:
    """The loss whose sum of squared residuals overflows the run's dtype: a loss evaluated in
    that dtype (as the other engines do) is infinite above it, so the run counts as diverged
    there too, although the float64 statistics would still give a finite number."""
    return float(np.finfo(dtype).max) * loss_scale / n


def unsound_start() -> UserError:
    """The error every engine gives when a run's starting point is already unsound."""
    return UserError("the initial parameters give a non-finite loss; use a smaller init or "
                     "standardize the data")


def choose_engine(engine: str, device: str) -> str:
    """`auto` is the compiled kernel on the CPU and the affine scan elsewhere; the compiled
    kernel runs on the CPU only."""
    if engine == "auto":
        return "compiled" if device == "cpu" else "affine"
    if engine == "compiled" and device != "cpu":
        raise UserError(f"train.engine 'compiled' runs on the CPU, not on {device}; set "
                        "train.engine: auto (or device: cpu)")
    return engine


@dataclass
class Runs:
    """R runs of one plan from R starts, logged at the same points.

    A diverged run stops at its last sound logging point: its later losses and states are
    NaN (they never reach a metrics file), and `final` is its state at that point.
    """
    log_updates: np.ndarray   # (P,) update counts at the logging points, 0 first
    losses: np.ndarray        # (R, P) float64 whole-set loss in the recorded convention
    states: np.ndarray        # (R, P, p+1) weights then bias at each point, the run's dtype
    diverged_at: np.ndarray   # (R,) int64 first unsound update, -1 for a run that never was
    seconds: float            # wall-clock time training all R runs (loss evaluation aside)
    reached_at: np.ndarray | None = None  # (R,) int64 first update with loss <= plan.target
                                          # (0 the start), -1 never or not before diverging

    @functools.cached_property
    def final(self) -> np.ndarray:
        """(R, p+1) float64 weights then bias at each run's last sound point."""
        last = (~np.isnan(self.losses)).cumsum(axis=1).argmax(axis=1)
        return self.states[np.arange(len(last)), last].astype(np.float64)
