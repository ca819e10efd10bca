"""The workers of guild's original design, built on guild's public API only.

* :mod:`guild_workers.task` — TaskWorker: a sandboxed command, or a prompt to an
  LLM-style HTTP API behind a rate limiter and a cache.
* :mod:`guild_workers.pm` — PMWorker: a project's phases (commands, prompts,
  inline actions, posts) run as a workflow, in parallel, rolled back on failure.
* :mod:`guild_workers.result` — ResultWorker: job results posted to Slack (Web
  API and incoming webhooks) within per-channel rate limits and size limits,
  each part once, with durable per-channel statistics.
* :mod:`guild_workers.slack_double` — a Slack-compatible local server for tests
  and demos.
"""
