"""Command line: ``python -m fastopt bench``."""

from __future__ import annotations

import argparse
import sys


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
    args = parser.parse_args(argv)

    from .bench import run

    rules = args.rules or list(run.RULES)
    unknown = [r for r in rules if r not in run.RULES]
    if unknown:
        parser.error(f"unknown rule(s) {unknown}; choose from {list(run.RULES)}")
    return run.main([int(s) for s in args.sizes], rules, args.dtype, args.quick, args.json,
                    not args.no_torch, not args.no_threshold, not args.no_resnet,
                    not args.no_startup)


if __name__ == "__main__":
    sys.exit(main())
