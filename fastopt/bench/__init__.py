"""Benchmarks behind ``python -m fastopt bench`` and the pytest-benchmark suite in ``bench/``.

Every figure is a ratio to yardsticks timed in the same run, interleaved with it: a
same-traffic roofline kernel (:mod:`.roofline`), a plain NumPy implementation (each
rule's ``numpy_step`` in the registry) and, when installed, torch.optim
(:mod:`.torch_ref`). Absolute times on shared machines drift by 20% or more between runs;
ratios from one run do not.
"""
