"""Command line: ``python -m fastopt demo``, ``python -m fastopt bench`` and
``python -m fastopt compile``."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

#: The largest ``--sizes`` value: 1e10 float32 values are 40 GB per array.
MAX_BENCH_SIZE = 1e10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastopt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="time every rule against a same-traffic roofline "
                                         "kernel, NumPy and (if installed) torch")
    bench.add_argument("--sizes", type=float, nargs="+", default=None,
                       help="element counts (default 1e6; with --device cuda, 1e8; with "
                            "--distributed, 1e7 5e7)")
    bench.add_argument("--rules", nargs="+", default=None, help="subset of rules")
    bench.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    bench.add_argument("--quick", action="store_true", help="fewer repetitions")
    bench.add_argument("--json", action="store_true", help="machine-readable output")
    bench.add_argument("--no-torch", action="store_true", help="skip the torch column")
    bench.add_argument("--no-threshold", action="store_true",
                       help="skip measuring the serial/parallel crossover")
    bench.add_argument("--no-resnet", action="store_true",
                       help="skip the ResNet-50 whole-model workload")
    bench.add_argument("--no-startup", action="store_true",
                       help="skip timing start-up in fresh processes")
    bench.add_argument("--no-batchnorm", action="store_true", help="skip the BatchNorm rows")
    bench.add_argument("--no-precision", action="store_true",
                       help="skip the rows with bfloat16 and 8-bit state and 16-bit parameters")
    bench.add_argument("--no-loops", action="store_true",
                       help="skip the training loops and the steps beside a busy process")
    bench.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                       help="cuda: the rules on the GPU against its copy bandwidth and "
                            "torch's CUDA optimizers and BatchNorm (default sizes 1e8)")
    bench.add_argument("--distributed", action="store_true",
                       help="only the sharded Adam step (fastopt.distributed) against the MPI "
                            "collectives that move its bytes and the step over 1/N of the "
                            "values; run under MPI: mpiexec -n 2 python -m fastopt bench "
                            "--distributed (default sizes 1e7 5e7; one fastopt thread per "
                            "rank unless NUMBA_NUM_THREADS is set)")
    demo = sub.add_parser("demo", help="train a BatchNorm MLP on the shipped digits with "
                                       "every rule; print a table and write a figure")
    demo.add_argument("--rules", nargs="+", default=None,
                      help="rules to train (default: the spec's eight; any of "
                           "fastopt.optim.RULE_NAMES)")
    demo.add_argument("--epochs", type=int, default=40, help="maximum epochs (default 40)")
    demo.add_argument("--batch-size", type=int, default=64)
    demo.add_argument("--noise", type=float, default=None, metavar="ETA",
                      help="add the spec's annealed gradient noise with this eta")
    demo.add_argument("--curriculum", action="store_true",
                      help="feed easy examples (least ink) first")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", type=Path, default=Path("fastopt_demo.png"),
                      help="where to write the PNG (default fastopt_demo.png)")
    demo.add_argument("--quick", action="store_true", help="3 epochs, SGD and Adam only")
    demo.add_argument("--state-dtype", nargs="+", default=["none"], metavar="DTYPE",
                      help="the optimizer's state: none (float32), bfloat16, 8bit, int8, fp8; "
                           "several train each rule once per choice")
    demo.add_argument("--param-dtype", default="float32",
                      choices=["float32", "bfloat16", "float16"],
                      help="store the parameters in 16 bits (stepped with a float32 master "
                           "copy; the network computes in float32)")
    demo.add_argument("--distributed", action="store_true",
                      help="data-parallel under MPI (mpiexec -n N python -m fastopt demo "
                           "--distributed): each rank takes 1/N of every minibatch, a "
                           "fastopt.distributed.ShardedOptimizer steps; rank 0 also trains "
                           "each rule in one process for comparison (needs mpi4py)")
    comp = sub.add_parser("compile", help="load or compile ahead of a run the kernels it will "
                                          "use (kept in Numba's disk cache)")
    comp.add_argument("--rules", nargs="+", default=None,
                      help="rules (default: every registered rule)")
    comp.add_argument("--dtypes", nargs="+", default=["float32"],
                      choices=["float32", "float64"], help="default float32")
    comp.add_argument("--clip", action="store_true", help="steps with clip_norm")
    comp.add_argument("--weight-decay", action="store_true", help="steps with L2 weight decay")
    comp.add_argument("--decoupled", action="store_true",
                      help="steps with decoupled (AdamW-style) weight decay")
    comp.add_argument("--noise", action="store_true", help="steps with gradient noise")
    comp.add_argument("--maximize", action="store_true", help="steps with maximize=True")
    comp.add_argument("--batchnorm", action="store_true", help="BatchNorm's kernels too")
    args = parser.parse_args(argv)

    if args.command == "compile":
        return _compile(parser, args)

    if args.command == "demo":
        from .demo import run as demo_run

        rules = args.rules or (["SGD", "Adam"] if args.quick else demo_run.DEFAULT_RULES)
        unknown = [r for r in rules if r not in demo_run.RULES]
        if unknown:
            parser.error(f"unknown rule(s) {unknown}; choose from {demo_run.RULES}")
        if args.epochs < 1:
            parser.error("--epochs must be at least 1")
        if args.batch_size < 2:
            parser.error("--batch-size must be at least 2 (the network's BatchNorm needs two "
                         "or more examples per batch)")
        if args.noise is not None and not 0.0 <= args.noise < math.inf:
            parser.error(f"--noise must be a finite number >= 0, got {args.noise}")
        if args.seed < 0:
            parser.error(f"--seed must be >= 0, got {args.seed}")
        bad = [d for d in args.state_dtype if d not in demo_run.STATE_DTYPES]
        if bad:
            parser.error(f"unknown --state-dtype {bad}; choose from {demo_run.STATE_DTYPES}")
        storages = [demo_run.Storage(None if d == "none" else d, args.param_dtype)
                    for d in dict.fromkeys(args.state_dtype)]
        try:
            args.out = demo_run.output_path(args.out)
        except ValueError as exc:
            parser.error(str(exc))
        comm = None
        if args.distributed:  # checks (parser errors), one thread per rank
            from .demo import distributed as demo_distributed

            comm = demo_distributed.setup(args, parser.error)
        return demo_run.main(rules, 3 if args.quick else args.epochs, args.batch_size,
                             args.seed, args.noise, args.curriculum, args.out,
                             storages=storages, comm=comm)

    if args.distributed:
        return _bench_distributed(parser, args)

    from .bench import run

    rules = args.rules or list(run.RULES)
    unknown = [r for r in rules if r not in run.RULES]
    if unknown:
        parser.error(f"unknown rule(s) {unknown}; choose from {list(run.RULES)}")
    sizes = _sizes(parser, [1e8 if args.device == "cuda" else 1e6] if args.sizes is None
                   else args.sizes)
    if args.device == "cuda":
        from .bench import gpu

        return gpu.main(sizes, args.rules or ["Adam", "SGD", "Momentum"], args.dtype,
                        args.quick, args.json, not args.no_resnet, not args.no_batchnorm)
    return run.main(sizes, rules, args.dtype, args.quick, args.json,
                    not args.no_torch, not args.no_threshold, not args.no_resnet,
                    not args.no_startup, not args.no_batchnorm, not args.no_loops,
                    not args.no_precision)


def _sizes(parser: argparse.ArgumentParser, sizes: list[float]) -> list[int]:
    bad = [s for s in sizes if not (1 <= s <= MAX_BENCH_SIZE and s == int(s))]
    if bad:
        parser.error(f"--sizes must be whole numbers of elements from 1 to "
                     f"{MAX_BENCH_SIZE:.0e}, got {bad}")
    return [int(s) for s in sizes]


def _bench_distributed(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``python -m fastopt bench --distributed``, on every rank of the MPI job: only the
    sharded step's section (the others are one-process benchmarks)."""
    if args.device != "cpu":
        parser.error("--distributed times host (NumPy) parameters: leave out --device")
    if args.dtype != "float32" or args.rules:
        parser.error("--distributed times float32 Adam: leave out --dtype and --rules")
    from .bench import distributed

    sizes = _sizes(parser, list(distributed.DEFAULT_SIZES) if args.sizes is None
                   else args.sizes)
    try:
        from mpi4py import MPI
    except ImportError:
        print('python -m fastopt bench --distributed needs mpi4py and an MPI library: pip '
              'install "fastopt[mpi]" (or mpi4py built against your MPI), then run it under '
              'mpiexec, e.g. mpiexec -n 2 python -m fastopt bench --distributed',
              file=sys.stderr)
        return 1
    return distributed.main(sizes, args.quick, args.json, MPI.COMM_WORLD)


def _compile(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``python -m fastopt compile``: a throwaway optimizer per rule and dtype with the
    options asked for, handed to :func:`fastopt.precompile` with its parallel kernels
    (the arrays' sizes are not known here)."""
    import numpy as np

    from . import optim
    from .noise import GradientNoise
    from .precompile import precompile

    names = list(optim.RULE_NAMES)
    rules = args.rules or names
    unknown = [r for r in rules if r not in names]
    if unknown:
        parser.error(f"unknown rule(s) {unknown}; choose from {names}")
    if args.weight_decay and args.decoupled:
        parser.error("--weight-decay and --decoupled are two forms of weight decay: pick one")
    options = {
        "clip_norm": 1.0 if args.clip else None,
        "grad_noise": GradientNoise(0.01) if args.noise else None,
        "weight_decay": 0.01 if args.weight_decay or args.decoupled else 0.0,
        "decoupled_weight_decay": args.decoupled,
        "maximize": args.maximize,
    }
    opts = [getattr(optim, r)(np.zeros(1, dt), **options) for r in rules for dt in args.dtypes]
    n = precompile(*opts, batchnorm=args.dtypes if args.batchnorm else (),
                   parallel_kernels=True)
    print(f"{n} kernel versions ready (in Numba's disk cache for later runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
