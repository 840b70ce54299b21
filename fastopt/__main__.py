"""Command line: ``python -m fastopt demo`` and ``python -m fastopt bench``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastopt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="time every rule against a same-traffic roofline "
                                         "kernel, NumPy and (if installed) torch")
    bench.add_argument("--sizes", type=float, nargs="+", default=[1e6],
                       help="element counts (default 1e6)")
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
    bench.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                       help="cuda: the rules on the GPU against its copy bandwidth and "
                            "torch's CUDA optimizers and BatchNorm (default sizes 1e8)")
    demo = sub.add_parser("demo", help="train a BatchNorm MLP on the shipped digits with "
                                       "every rule; print a table and write a figure")
    demo.add_argument("--rules", nargs="+", default=None, help="subset of rules")
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
    args = parser.parse_args(argv)

    if args.command == "demo":
        from .demo import run as demo_run

        rules = args.rules or (["SGD", "Adam"] if args.quick else demo_run.RULES)
        unknown = [r for r in rules if r not in demo_run.RULES]
        if unknown:
            parser.error(f"unknown rule(s) {unknown}; choose from {demo_run.RULES}")
        if args.epochs < 1 or args.batch_size < 1:
            parser.error("--epochs and --batch-size must be at least 1")
        if args.noise is not None and args.noise < 0:
            parser.error("--noise must be >= 0")
        return demo_run.main(rules, 3 if args.quick else args.epochs, args.batch_size,
                             args.seed, args.noise, args.curriculum, args.out)

    from .bench import run

    rules = args.rules or list(run.RULES)
    unknown = [r for r in rules if r not in run.RULES]
    if unknown:
        parser.error(f"unknown rule(s) {unknown}; choose from {list(run.RULES)}")
    if args.device == "cuda":
        from .bench import gpu

        sizes = args.sizes if "--sizes" in (argv or sys.argv) else [1e8]
        return gpu.main([int(s) for s in sizes], args.rules or ["Adam", "SGD", "Momentum"],
                        args.dtype, args.quick, args.json, not args.no_resnet,
                        not args.no_batchnorm)
    return run.main([int(s) for s in args.sizes], rules, args.dtype, args.quick, args.json,
                    not args.no_torch, not args.no_threshold, not args.no_resnet,
                    not args.no_startup, not args.no_batchnorm)


if __name__ == "__main__":
    sys.exit(main())
