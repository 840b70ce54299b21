"""pytest-benchmark suite: each fastopt benchmark sits in a group with its yardsticks.

    pytest bench --benchmark-autosave                 # record a baseline
    pytest bench --benchmark-compare --benchmark-compare-fail=median:25%   # after a change

Groups are ``<rule>-<n>-<dtype>``: fastopt, the same-traffic roofline kernel (and, for the
rules that divide, the divider floor: the same traffic plus one square root and one division
per value), the NumPy reference and torch (when installed) run in the same session, so
their ratio is honest even when absolute times drift.
"""
