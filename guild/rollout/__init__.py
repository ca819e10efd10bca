"""Canary rollouts of a worker: a share of a queue's new jobs for a new version,
10 % → 50 % → 100 %, rolled back on trouble (see docs/rollout.md).

Public names are re-exported from :mod:`guild`; this package imports nothing at
import time, so the brokers can use its routing rule without a cycle.
"""
