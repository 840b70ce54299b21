"""``python -m fastopt demo``: train the same MLP with every rule, print a table, plot.

The network (Linear 64→128, BatchNorm, ReLU, Linear 128→10, softmax cross-entropy) learns
the 8x8 handwritten digits shipped in ``fastopt.datasets``. Each rule gets the same
initialisation and minibatches, a sensible learning rate, weight decay on the weights
only (a parameter group), and early stopping on the validation loss (restoring the best
parameters). The figure shows validation loss per epoch and each rule's path on the
Rosenbrock function.

With ``--distributed``, under ``mpiexec -n N``, the same training runs data-parallel: each
rank takes 1/N of every minibatch and a :class:`fastopt.distributed.ShardedOptimizer` steps
(:mod:`.distributed`); rank 0 also trains each rule in one process for comparison.
"""

from __future__ import annotations

import os
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import optim, parallel
from .._progress import progress
from ..curriculum import Curriculum
from ..data import minibatches
from ..datasets import load_digits
from ..early_stopping import EarlyStopping
from ..noise import GradientNoise
from ..rules.registry import registry
from .distributed import SyncMLP, blas_note, my_slice, rank0_done, wait_for_rank0
from .mlp import MLP
from .trajectories import LR_2D, START, rosenbrock, trajectory

#: Learning rates for the MLP (batch 64), chosen per rule for a fair comparison (each
#: rule's ``demo_lr`` in the registry).
LR = {name: rule.demo_lr for name, rule in registry().items()}
RULES = list(LR)
#: What ``python -m fastopt demo`` trains without ``--rules``: the spec's rules.
DEFAULT_RULES = [name for name, rule in registry().items() if rule.spec]


#: ``--state-dtype`` choices ("none": the parameters' float dtype) and ``--param-dtype``.
STATE_DTYPES = ["none", "bfloat16", "8bit", "int8", "fp8"]
PARAM_DTYPES = ["float32", "bfloat16", "float16"]


@dataclass(frozen=True)
class Storage:
    """How a run stores things: the optimizer's ``state_dtype`` (None: float32) and the
    parameters' dtype (16-bit ones are stepped with a float32 master copy, and the network
    computes in float32 from their rounded values, as mixed-precision training does)."""

    state_dtype: str | None = None
    param_dtype: str = "float32"

    def label(self, rule: str) -> str:
        tags = [t for t in (self.state_dtype, self.param_dtype != "float32" and
                            f"{self.param_dtype} params") if t]
        return f"{rule} [{', '.join(tags)}]" if tags else rule


@dataclass
class Result:
    rule: str
    label: str = ""
    state_bytes_per_param: float = 0.0
    epochs: int = 0
    best_val_acc: float = 0.0
    test_acc: float = 0.0
    seconds: float = 0.0
    steps: int = 0
    #: With --distributed: the test accuracy of the same rule trained by one process.
    one_process_test_acc: float | None = None
    val_loss: list[float] = field(default_factory=list)
    final_val_loss: float = float("nan")  # of the model returned: the best epoch's

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds else 0.0


def split(seed: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """70% train, 15% validation, 15% test, shuffled with ``seed``."""
    images, labels = load_digits()
    x = images.reshape(len(images), -1)
    order = np.random.default_rng(seed).permutation(len(x))
    a, b = int(0.7 * len(x)), int(0.85 * len(x))
    parts = order[:a], order[a:b], order[b:]
    return tuple((np.ascontiguousarray(x[i]), labels[i]) for i in parts)


DECAYED, NOT_DECAYED = ("w1", "w2"), ("b2", "bn.weight", "bn.bias")


class Model:
    """The network, its optimizer, and (for 16-bit parameters) the 16-bit copies the
    optimizer steps: :meth:`sync` rounds them into the network's float32 weights."""

    def __init__(self, rule: str, n_in: int, seed: int, noise: float | None,
                 storage: Storage = Storage(), comm: Any = None) -> None:
        if comm is None:
            self.net = net = MLP(n_in, 128, 10, seed=seed)
        else:  # data-parallel: BatchNorm's statistics over every rank's slice
            self.net = net = SyncMLP(n_in, 128, 10, seed, comm)
        self.comm = comm
        flat = net.flat
        options = {"lr": LR[rule], "weight_decay": 1e-4, "state_dtype": storage.state_dtype,
                   "grad_noise": GradientNoise(noise, seed=seed) if noise else None}
        self.half: dict[str, np.ndarray] = {}
        if storage.param_dtype == "float32":
            groups = [{"params": flat.subset(*DECAYED)},
                      {"params": flat.subset(*NOT_DECAYED), "weight_decay": 0.0}]
        else:
            dtype = _half_dtype(storage.param_dtype)
            self.half = {k: flat[k].astype(dtype) for k in DECAYED + NOT_DECAYED}
            groups = [{"params": [self.half[k] for k in DECAYED]},
                      {"params": [self.half[k] for k in NOT_DECAYED], "weight_decay": 0.0}]
            options.update(master_weights=True, grad_dtype="float32")
            self.grads = [flat.grads[k] for k in DECAYED + NOT_DECAYED]
        if comm is None:
            self.opt = getattr(optim, rule)(groups, **options)
        else:
            from ..distributed import ShardedOptimizer

            self.opt = ShardedOptimizer(getattr(optim, rule), groups, comm=comm, **options)
        self.sync()
        n = sum(a.size for a in (flat[k] for k in DECAYED + NOT_DECAYED))
        self.n_params = n

    def sync(self) -> None:
        """The network's weights from the 16-bit parameters (nothing for float32)."""
        for k, a in self.half.items():
            self.net.flat[k][...] = a

    def train_step(self, x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> None:
        """One step on the minibatch ``x[idx], y[idx]`` (distributed: this rank's slice
        of it, the other ranks' in the same call)."""
        if self.comm is None:
            self.net.loss_and_grad(x[idx], y[idx])
        else:
            mine = my_slice(idx, self.comm)
            self.net.loss_and_grad(x[mine], y[mine], len(idx))
        self.step()

    def step(self) -> None:
        self.opt.step(self.grads if self.half else None)
        self.sync()

    def state_bytes_per_param(self) -> float:
        """The optimizer's memory per parameter (distributed: the largest rank's shard)."""
        n = self.opt.state_bytes()
        if self.comm is not None:
            n = max(self.comm.allgather(n))
        return n / self.n_params


def _half_dtype(name: str) -> np.dtype:
    if name == "float16":
        return np.dtype(np.float16)
    try:
        import ml_dtypes
    except ImportError:
        raise SystemExit("--param-dtype bfloat16 needs ml_dtypes: pip install "
                         "'fastopt[bf16]'") from None
    return np.dtype(ml_dtypes.bfloat16)


def build(rule: str, n_in: int, seed: int, noise: float | None,
          storage: Storage = Storage()) -> tuple[MLP, optim.Optimizer]:
    """The network and its optimizer: weight decay on the weights only (a group)."""
    model = Model(rule, n_in, seed, noise, storage)
    return model.net, model.opt


def train(rule: str, data, epochs: int, batch_size: int, seed: int, noise: float | None,
          curriculum: bool, patience: int, show: bool, storage: Storage = Storage(),
          comm: Any = None) -> Result:
    """Train ``rule``; with ``comm`` (every rank calls it), data-parallel over its ranks,
    on the same minibatches in the same order."""
    (xtr, ytr), (xva, yva), (xte, yte) = data
    # One untimed step on a throwaway copy compiles (or loads) this rule's kernels, so the
    # wall time below is training, not compilation.
    # Kernels are specialised by size (serial below a threshold), so warm every size used.
    scratch = Model(rule, xtr.shape[1], seed, noise, storage, comm)
    # A last minibatch of one example would leave BatchNorm no batch variance: dropped.
    drop_last = len(xtr) % batch_size == 1
    for rows in sorted({min(batch_size, len(xtr)), len(xtr) % batch_size or batch_size}
                       - {1}):
        scratch.train_step(xtr, ytr, np.arange(rows))
    scratch.net.evaluate(xva, yva)
    scratch.net.evaluate(xte, yte)
    model = Model(rule, xtr.shape[1], seed, noise, storage, comm)
    net = model.net
    flat = net.flat
    stopper = EarlyStopping(patience=patience, restore_best=True)
    state = [flat.data, net.bn.running_mean, net.bn.running_var]
    pacing = None
    if curriculum:  # easy (little ink) digits first
        pacing = Curriculum(xtr.sum(axis=1), pacing="exponential", start=0.3, inc=1.5,
                            step_length=max(1, len(xtr) // batch_size), seed=seed)
    res = Result(rule, storage.label(rule), model.state_bytes_per_param())
    t0 = time.perf_counter()
    label = storage.label(rule) + ("" if comm is None else f" ({comm.Get_size()} ranks)")
    for epoch in progress(range(epochs), f"{label:<9}", enabled=show):
        if pacing is None:
            batches = minibatches(len(xtr), batch_size, seed=seed * 1000 + epoch,
                                  drop_last=drop_last)
        else:
            batches = (pacing.batch(batch_size)
                       for _ in range(max(1, len(xtr) // batch_size)))
        for idx in batches:
            model.train_step(xtr, ytr, idx)
            res.steps += 1
        val_loss, val_acc = net.evaluate(xva, yva)
        if comm is not None:  # the ranks hold the same model: rank 0's word decides
            val_loss, val_acc = comm.bcast((val_loss, val_acc))
        res.val_loss.append(val_loss)
        res.best_val_acc = max(res.best_val_acc, val_acc)
        res.epochs = epoch + 1
        # The model is its parameters and BatchNorm's running statistics: the best copy
        # keeps both, so the restored model is the one that had the best validation loss.
        if stopper.update(val_loss, state):
            break
    if stopper.best_step is not None and not stopper.stopped:
        stopper.restore(state)
    res.seconds = time.perf_counter() - t0
    res.final_val_loss = net.evaluate(xva, yva)[0]
    res.test_acc = net.evaluate(xte, yte)[1]
    return res


def format_table(results: list[Result]) -> str:
    """The results, one row each; ``state B/param``: the optimizer's memory (its state,
    8-bit block maxima and master copy) per parameter (distributed: on the rank that holds
    the most); ``1-proc test``, when there are such numbers: the test accuracy of the same
    rule trained by one process."""
    width = max([10] + [len(r.label or r.rule) + 2 for r in results])
    compare = any(r.one_process_test_acc is not None for r in results)
    head = (f"{'rule':<{width}}{'epochs':>7}{'best val acc':>14}{'test acc':>10}"
            + (f"{'1-proc test':>13}" if compare else "")
            + f"{'state B/param':>15}{'wall s':>8}{'steps/s':>9}")
    lines = [head, "-" * len(head)]
    for r in results:
        one = "" if not compare else (
            f"{'-':>13}" if r.one_process_test_acc is None
            else f"{100 * r.one_process_test_acc:>12.1f}%")
        lines.append(f"{r.label or r.rule:<{width}}{r.epochs:>7}{100 * r.best_val_acc:>13.1f}%"
                     f"{100 * r.test_acc:>9.1f}%{one}{r.state_bytes_per_param:>15.2f}"
                     f"{r.seconds:>8.2f}{r.steps_per_second:>9.0f}")
    return "\n".join(lines)


def coincidence_note(rules: list[str]) -> str:
    """Why some of ``rules``' curves lie on top of each other in the figure, or ''."""
    notes = []
    same_step = [r for r in ("SGD", "Momentum", "Nesterov") if r in rules]
    if len(same_step) > 1:
        notes.append(f"{', '.join(same_step)} take the same effective step here (SGD's lr "
                     f"{LR['SGD']:g} = Momentum's lr/(1 - momentum) = {LR['Momentum']:g}/0.1), "
                     "so their curves nearly coincide")
    if "Adam" in rules and "Nadam" in rules:
        notes.append("Nadam differs from Adam by a look-ahead of a (1 - beta1) = 0.1 share "
                     "of the step, so their curves nearly coincide too")
    return ";\n".join(notes)


def plot(results: list[Result], rules: list[str], out: Path) -> bool:
    """Write the two-panel PNG; False (and nothing written) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5))
    styles = ["-", "--", ":", "-."]  # curves that coincide stay visible
    for k, r in enumerate(results):
        ax1.plot(np.arange(1, len(r.val_loss) + 1), r.val_loss, styles[k % len(styles)],
                 label=f"{r.label or r.rule} (lr {LR[r.rule]:g})", lw=1.6)
    ax1.set(xlabel="epoch", ylabel="validation loss (cross-entropy)", yscale="log",
            title="8x8 digits, MLP with BatchNorm")
    ax1.legend(fontsize=8)
    note = coincidence_note([r.rule for r in results])
    xs, ys = np.meshgrid(np.linspace(-2, 2, 300), np.linspace(-1, 3, 300))
    ax2.contour(xs, ys, rosenbrock(xs, ys), levels=np.logspace(-1, 3.5, 20), cmap="Greys",
                linewidths=0.6)
    for rule in rules:
        path = trajectory(rule)
        (line,) = ax2.plot(path[:, 0], path[:, 1], lw=1.4, label=f"{rule} (lr {LR_2D[rule]:g})")
        ax2.plot(*path[-1], "o", color=line.get_color(), ms=5)
    ax2.plot(*START, "ko")
    ax2.plot(1, 1, "r*", ms=12)
    ax2.set(xlim=(-2, 2), ylim=(-1, 3), xlabel="x", ylabel="y",
            title="Rosenbrock, 600 steps from (-1.5, 2)")
    ax2.legend(fontsize=8, loc="lower right")
    if note:  # a caption under both panels
        fig.text(0.01, 0.01, "\n".join(textwrap.fill(n, 160) for n in note.split("\n")),
                 fontsize=8, color="0.25", va="bottom")
    fig.tight_layout(rect=(0, 0.09 if note else 0, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def _quiet(*args: Any, **kwargs: Any) -> None:
    """``print`` on the ranks other than 0: nothing."""


def output_path(out: Path | str) -> Path:
    """Where the figure goes, checked before any training: an existing directory gets
    ``fastopt_demo.png`` inside it; a name without a suffix gets ``.png`` (matplotlib
    would add it); a suffix matplotlib cannot write, or a folder that cannot be made or
    written, is a ``ValueError`` that says so."""
    out = Path(out)
    if out.is_dir():
        out = out / "fastopt_demo.png"
    elif not out.suffix:
        out = out.with_suffix(".png")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        pass  # no figure will be written; nothing more to check
    else:
        formats = FigureCanvasAgg(Figure()).get_supported_filetypes()
        if out.suffix[1:].lower() not in formats:
            raise ValueError(f"--out {out}: matplotlib cannot write {out.suffix!r} files; "
                             f"use one of {', '.join('.' + f for f in sorted(formats))}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out {out}: cannot make its folder ({exc})") from None
    if not os.access(out.parent, os.W_OK):
        raise ValueError(f"--out {out}: its folder {out.parent} is not writable")
    return out


def main(rules: list[str], epochs: int, batch_size: int, seed: int, noise: float | None,
         curriculum: bool, out: Path, patience: int = 5,
         storages: list[Storage] | None = None, comm: Any = None) -> int:
    """Train each rule under each storage (default: float32 throughout), print the table,
    write the figure. With ``comm`` (every rank calls it): data-parallel over its ranks,
    and only rank 0 prints and writes; an error on any rank ends the whole job."""
    if comm is None:
        return _main(rules, epochs, batch_size, seed, noise, curriculum, out, patience,
                     storages, None)
    try:
        return _main(rules, epochs, batch_size, seed, noise, curriculum, out, patience,
                     storages, comm)
    except BaseException:  # the other ranks would wait for this one forever
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        comm.Abort(1)
        raise


def _main(rules: list[str], epochs: int, batch_size: int, seed: int, noise: float | None,
          curriculum: bool, out: Path, patience: int, storages: list[Storage] | None,
          comm: Any) -> int:
    storages = storages or [Storage()]
    out = output_path(out)
    data = split(seed)
    rank0 = comm is None or comm.Get_rank() == 0
    say = print if rank0 else _quiet
    say(f"digits: {len(data[0][0])} train, {len(data[1][0])} validation, "
        f"{len(data[2][0])} test images; up to {epochs} epochs, batch {batch_size}, "
        f"early stopping patience {patience}"
        + (f", gradient noise eta={noise}" if noise else "")
        + (", curriculum (least ink first)" if curriculum else ""))
    if comm is not None:
        world = comm.Get_size()
        say(f"distributed: {world} MPI rank(s), each {batch_size // world} examples of every "
            "minibatch, BatchNorm statistics over the whole minibatch, a ShardedOptimizer "
            f"(the state split among the ranks), {parallel.get_num_threads()} fastopt "
            f"thread(s) per rank, {blas_note()}; 1-proc test: the same rule trained by one "
            "process (rank 0)")
    results = []
    for r in rules:
        for st in storages:
            res = train(r, data, epochs, batch_size, seed, noise, curriculum, patience, rank0,
                        st, comm)
            if comm is not None:  # the one-process yardstick, on rank 0 alone
                if rank0:
                    res.one_process_test_acc = train(
                        r, data, epochs, batch_size, seed, noise, curriculum, patience, True,
                        st).test_acc
                    rank0_done(comm)
                else:
                    wait_for_rank0(comm)
            results.append(res)
    if not rank0:
        return 0
    print()
    print(format_table(results))
    if plot(results, rules, out):
        print(f"\nfigure: {out}")
    else:
        print("\n(no figure: matplotlib is not installed; pip install 'fastopt[plot]')")
    return 0
