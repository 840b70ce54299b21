"""Backends: how a rule is looped over memory. The equations live in ``fastopt.rules``."""
