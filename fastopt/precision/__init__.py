"""Storage formats below float32: 16-bit floats, stochastic rounding, 8-bit code books.

See docs/precision.md. Used by the optimizer classes (``state_dtype``, 16-bit parameters,
``master_weights``, ``stochastic_rounding``) through ``fastopt.drivers.cpu_precision``.
"""
