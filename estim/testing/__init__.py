"""Test support shipped with estim, for estim's own suites and for users' tests.

:mod:`estim.testing.strategies`: Hypothesis strategies for protocols, prescriptions and
device profiles, valid by construction and composable (needs ``estim[test]``).
"""
