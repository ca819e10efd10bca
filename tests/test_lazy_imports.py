"""Start-up stays lean: ``import guild`` and ``guild run`` leave the heavy optional
parts unloaded until used, and the names loaded on first use are the same objects."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

HEAVY = (
    "coredis",
    "prometheus_client",
    "hypercorn",
    "trio_websocket",
    "guild.sandbox._process",
    "guild.rollout._store",
    "guild.config",
    "guild.observability._http",
)


def loaded_after(code: str) -> list[str]:
    """Which of HEAVY a fresh interpreter has loaded after running ``code``."""
    probe = code + textwrap.dedent(
        f"""
        import json, sys
        print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    found: list[str] = json.loads(out.splitlines()[-1])
    return found


class TestImportGuild:
    def test_loads_none_of_the_optional_parts(self) -> None:
        assert loaded_after("import guild\n") == []

    def test_an_app_with_a_worker_loads_none_either(self) -> None:
        code = textwrap.dedent(
            """
            import guild
            app = guild.Guild("lean")

            @app.worker("q", limit=guild.Limit(rate="5/s", key=lambda job: job.payload["t"]))
            async def handle(job: guild.Job) -> None:
                pass
            """
        )
        assert loaded_after(code) == []

    def test_the_sandbox_check_does_not_load_the_sandbox(self) -> None:
        code = textwrap.dedent(
            """
            import guild
            from guild.sandbox._held import held_isolation, replace_held_policies
            app = guild.Guild("lean")

            @app.worker("q")
            async def handle(job: guild.Job) -> None:
                pass

            assert held_isolation(app) is None
            assert replace_held_policies(app, lambda policy: policy) == 0
            """
        )
        assert loaded_after(code) == []


class TestCommandLine:
    def test_loads_no_redis_client_http_server_or_sandbox(self) -> None:
        # guild run always keeps metrics (prometheus_client) and its health
        # policy; the HTTP server, Redis and the sandbox wait until asked for.
        loaded = set(loaded_after("import guild.cli\n"))
        unwanted = {"coredis", "hypercorn", "trio_websocket", "guild.sandbox._process"}
        assert loaded & unwanted == set()


class TestLazyNames:
    def test_each_lazy_name_is_the_private_modules_object(self) -> None:
        import guild
        import guild.config
        import guild.observability
        import guild.observability._http
        import guild.observability._metrics
        import guild.observability._multiprocess
        import guild.ratelimit
        import guild.ratelimit._redis
        import guild.rollout._machine
        import guild.rollout._store
        import guild.sandbox
        import guild.sandbox._policy
        import guild.sandbox._process

        pairs = [
            (guild.GuildConfig, guild.config.GuildConfig),
            (guild.load_config, guild.config.load_config),
            (guild.CanaryPolicy, guild.rollout._machine.CanaryPolicy),
            (guild.CanaryRecord, guild.rollout._store.CanaryRecord),
            (guild.read_canary, guild.rollout._store.load),
            (guild.Sandbox, guild.sandbox._process.Sandbox),
            (guild.SandboxPolicy, guild.sandbox._policy.SandboxPolicy),
            (guild.observability.serve_http, guild.observability._http.serve_http),
            (
                guild.observability.PrometheusInstrument,
                guild.observability._metrics.PrometheusInstrument,
            ),
            (
                guild.observability.prepare_multiprocess,
                guild.observability._multiprocess.prepare_multiprocess,
            ),
            (guild.ratelimit.RedisRateLimiter, guild.ratelimit._redis.RedisRateLimiter),
            (guild.sandbox.host_isolation, guild.sandbox._process.host_isolation),
        ]
        for public, private in pairs:
            assert public is private

    def test_lazy_classes_report_the_public_module(self) -> None:
        import guild

        assert guild.CanaryPolicy.__module__ == "guild"
        assert guild.Sandbox.__module__ == "guild"
        assert guild.GuildConfig.__module__ == "guild"

    def test_unknown_names_are_attribute_errors(self) -> None:
        import guild
        import guild.observability
        import guild.sandbox

        for module in (guild, guild.observability, guild.sandbox):
            with pytest.raises(AttributeError, match="NoSuchName"):
                module.NoSuchName  # type: ignore[attr-defined]  # noqa: B018

    def test_dir_lists_the_lazy_names(self) -> None:
        import guild
        import guild.observability

        assert {"Sandbox", "CanaryPolicy", "load_config"} <= set(dir(guild))
        assert {"serve_http", "PrometheusInstrument"} <= set(dir(guild.observability))
