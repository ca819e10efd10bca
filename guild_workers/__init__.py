"""The workers of guild's original design, built on guild's public API only.

* :mod:`guild_workers.task` — TaskWorker: a sandboxed command, or a prompt to an
  LLM-style HTTP API behind a rate limiter and a cache.
"""
