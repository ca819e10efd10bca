"""Start-up stays lean: ``import guild`` and ``guild run`` leave the heavy optional
parts unloaded until used, and the names loaded on first use are the same objects."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests._first_job import probe_env, probe_run
from tests._redis_server import running_redis_server

ROOT = Path(__file__).resolve().parent.parent

HEAVY = (
    "coredis",
    "prometheus_client",
    "hypercorn",
    "trio_websocket",
    "httpx",
    "guild.sandbox._process",
    "guild.rollout._store",
    "guild.config",
    "guild.observability._http",
    "guild.observability._access",
    "tomllib",
    "zoneinfo",
)


# guild's own parts that a process which does not use them never builds: the
# workflow coordinator and machine, the rate limiters, the memory broker, the
# health policy, the monitor and the /events hub.
UNUSED_PARTS = (
    "guild.workflows._coordinator",
    "guild.workflows._machine",
    "guild.workflows._spec",
    "guild.workflows._view",
    "guild.ratelimit",
    "guild.brokers.memory",
    "guild.observability._health",
    "guild.observability._monitor",
    "guild.observability._hub",
    "guild.observability._observe",
)


def loaded_after(code: str, modules: tuple[str, ...] = HEAVY) -> list[str]:
    """Which of ``modules`` a fresh interpreter has loaded after running ``code``."""
    probe = code + textwrap.dedent(
        f"""
        import json, sys
        print(json.dumps([m for m in {modules!r} if m in sys.modules]))
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

    def test_loads_none_of_the_parts_a_producer_does_not_use(self) -> None:
        code = textwrap.dedent(
            """
            import guild
            app = guild.Guild("lean")

            @app.worker("q", concurrency=64)
            async def handle(job: guild.Job) -> None:
                pass
            """
        )
        assert loaded_after(code, UNUSED_PARTS) == []

    def test_each_part_loads_when_first_used(self) -> None:
        code = textwrap.dedent(
            """
            import guild
            guild.chain(guild.Step("a", "q"), guild.Step("b", "q"))
            guild.Limit(rate="5/s")
            guild.MemoryBroker()
            guild.observability.Snapshot()
            """
        )
        assert loaded_after(code, UNUSED_PARTS) == [
            "guild.workflows._spec",
            "guild.ratelimit",
            "guild.brokers.memory",
            "guild.observability._health",
        ]

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
        # The HTTP server, Redis, Prometheus and the sandbox wait until asked for.
        loaded = set(loaded_after("import guild.cli\n"))
        unwanted = {
            "coredis",
            "hypercorn",
            "trio_websocket",
            "guild.sandbox._process",
            "prometheus_client",
            "guild.observability._http",
        }
        assert loaded & unwanted == set()

    def test_a_command_loads_only_its_own_module(self) -> None:
        code = textwrap.dedent(
            """
            import sys
            import guild.cli
            guild.cli.parser("result")
            print(sorted(m for m in sys.modules if m.startswith("guild.cli.")))
            """
        )
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        assert out.split() == [
            "['guild.cli._args',",
            "'guild.cli._output',",
            "'guild.cli._result',",
            "'guild.cli._startup']",
        ]

    def test_guild_run_reaches_its_first_job_without_them(self, tmp_path: Path) -> None:
        # A real `guild run` on a SQLite file: the handler of the one job reports
        # which modules its process has loaded by then.
        url = f"sqlite:///{tmp_path}/guild.db"
        subprocess.run(
            [sys.executable, "-m", "guild", "enqueue", "q", "1", "--broker", url],
            cwd=tmp_path,
            env=probe_env(tmp_path),
            capture_output=True,
            check=True,
            timeout=60,
        )
        with probe_run(tmp_path, url) as first_job:
            loaded = first_job()
        unwanted = {
            "coredis",
            "hypercorn",
            "trio_websocket",
            "prometheus_client",
            "guild.sandbox._process",
            "guild.observability._http",
            "guild.observability._dashboard",
            "guild.observability._multiprocess",
            "guild.observability._access",
            "guild.config._load",
            "guild.config._effective",
            # The file's schema, the health policy's verdicts, the events of the
            # parts the app does not use, its (absent) schedules and the decisions
            # of a supervisor whose children all run: none is built before the
            # first job.
            "guild.config._schema",
            "guild.observability._health",
            "guild.observability._feature_events",
            "guild._cron",
            "guild.supervision._decisions",
            "tomllib",
            "zoneinfo",
            "guild.cli._enqueue",
            "guild.cli._workflow",
            "guild.cli._top",
            "httpx",
            # Nothing of the app needs them: no Limit, the broker is SQLite and
            # holds no workflow (the coordinator loads once it holds one).
            "guild.ratelimit",
            "guild.brokers.memory",
            "guild.workflows._coordinator",
            "guild.workflows._machine",
            # A run that is not a canary records outcomes for rollouts; the
            # records, their state machine and the controller load when the
            # recorder first reads the broker, after a first wait.
            "guild.cli._canary",
            "guild.rollout._controller",
            "guild.rollout._machine",
            "guild.rollout._store",
        }
        assert loaded & unwanted == set()
        assert "guild.cli._run" in loaded  # the probe saw the run, not an empty list
        assert "guild.rollout._recorder" in loaded  # and its outcomes are counted

    def test_a_run_on_redis_loads_neither_sqlite_nor_a_resource_reader(
        self, tmp_path: Path
    ) -> None:
        # The Redis broker reads its Lua files, and needs neither sqlite3,
        # importlib.resources nor zipfile loaded before the first job (1.6 % of
        # the instructions of a start-up, by callgrind).
        with running_redis_server() as server:
            subprocess.run(
                [sys.executable, "-m", "guild", "enqueue", "q", "1", "--broker", server.url],
                cwd=tmp_path,
                env=probe_env(tmp_path),
                capture_output=True,
                check=True,
                timeout=60,
            )
            with probe_run(tmp_path, server.url) as first_job:
                loaded = first_job()
        assert "guild.brokers.redis" in loaded  # what reads them
        assert loaded & {"sqlite3", "_sqlite3", "importlib.resources", "zipfile"} == set()

    def test_the_rollout_store_a_redis_run_reads_later_needs_no_sqlite(self) -> None:
        # It names SQLite connections in annotations only: the recorder of a run
        # on Redis loads it after the first job, still without sqlite3.
        assert loaded_after("import guild.rollout._store\n", ("sqlite3", "_sqlite3")) == []


class TestDeferredMetrics:
    def test_states_seen_before_the_metrics_exist_reach_their_gauges(self) -> None:
        # The instrument remembers worker states and restarts until a scrape
        # makes its metrics; the scrape then shows what a live gauge would.
        code = textwrap.dedent(
            """
            import sys
            from guild.observability import PrometheusInstrument, WorkerStateChanged

            metrics = PrometheusInstrument("app")
            for state in ("starting", "running", "restarting", "running", "restarting",
                          "running"):
                metrics.worker_state_changed(
                    WorkerStateChanged(worker="w", state=state, at=0.0)
                )
            print("prometheus_client" in sys.modules)
            text = metrics.render().decode()
            for line in text.splitlines():
                if line.startswith(("guild_worker_state{", "guild_worker_restarts_total{")):
                    print(line)
            """
        )
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.splitlines()
        assert out[0] == "False"
        states = {
            "starting": 0.0,
            "running": 1.0,
            "restarting": 0.0,
        }
        for state, value in states.items():
            assert f'guild_worker_state{{app="app",state="{state}",worker="w"}} {value}' in out
        assert 'guild_worker_restarts_total{app="app",worker="w"} 2.0' in out


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
        import guild.workflows._spec
        import guild.workflows._view

        pairs = [
            (guild.Workflow, guild.workflows._spec.Workflow),
            (guild.chain, guild.workflows._spec.chain),
            (guild.WorkflowView, guild.workflows._view.WorkflowView),
            (guild.workflows.Step, guild.workflows._spec.Step),
            (guild.MemoryBroker, guild.brokers.memory.MemoryBroker),
            (guild.brokers.MemoryBroker, guild.brokers.memory.MemoryBroker),
            (guild.observability.Thresholds, guild.observability._health.Thresholds),
            (guild.observability.Monitor, guild.observability._monitor.Monitor),
            (guild.observability.configure_logging, guild.observability._logging.configure_logging),
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
        assert guild.Workflow.__module__ == "guild"
        assert guild.MemoryBroker.__module__ == "guild"
        assert guild.observability.Monitor.__module__ == "guild.observability"

    def test_a_workflow_class_reached_through_its_package_reports_guild(self) -> None:
        code = "import guild.workflows\nprint(guild.workflows.StepView.__module__)\n"
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        assert out.strip() == "guild"

    def test_unknown_names_are_attribute_errors(self) -> None:
        import guild
        import guild.observability
        import guild.sandbox
        import guild.workflows

        for module in (guild, guild.observability, guild.sandbox, guild.workflows):
            with pytest.raises(AttributeError, match="NoSuchName"):
                module.NoSuchName  # type: ignore[attr-defined]  # noqa: B018

    def test_dir_lists_the_lazy_names(self) -> None:
        import guild
        import guild.observability

        assert {"Sandbox", "CanaryPolicy", "load_config"} <= set(dir(guild))
        assert {"serve_http", "PrometheusInstrument"} <= set(dir(guild.observability))
        assert {"Workflow", "MemoryBroker", "chain"} <= set(dir(guild))
        assert {"Thresholds", "Monitor", "configure_logging"} <= set(dir(guild.observability))


# The runtime itself: what `import guild` must not build. A producer, every
# `guild` command and the parent of `guild run --processes N` import the package.
RUNTIME = (
    "guild._app",
    "guild._worker",
    "guild._client",
    "guild._job",
    "guild.brokers",
    "guild.brokers.sqlite",
    "guild.supervision",
    "guild.observability",
    "trio",
    "structlog",
    "attrs",
)


class TestTheBarePackage:
    def test_import_guild_builds_none_of_the_runtime(self) -> None:
        assert loaded_after("import guild\n", RUNTIME) == []

    def test_a_name_loads_its_module_on_first_use(self) -> None:
        assert loaded_after("import guild\nguild.Job\n", RUNTIME[:3]) == []
        assert loaded_after("import guild\nguild.Guild\n", RUNTIME[:3]) == [
            "guild._app",
            "guild._worker",
            "guild._client",
        ]

    def test_the_subpackages_stay_reachable_as_attributes(self) -> None:
        code = "import guild\nguild.brokers.Broker, guild.observability.Instrument\n"
        code += "guild.rollout, guild.supervision.Backoff\n"
        assert loaded_after(code, RUNTIME[:3]) == []

    def test_classes_reached_inside_the_runtime_still_say_guild(self) -> None:
        # No guild.X lookup at all: the runtime's own imports reach every class
        # first, and each still names the public module (reprs, tracebacks).
        code = textwrap.dedent(
            """
            import guild, json, sys
            import guild._app, guild._cron, guild.brokers.memory, guild.config._schema
            import guild.sandbox._process
            import guild.rollout._store, guild.workflows._view, guild.workflows._steps
            found = {}
            for module in list(sys.modules.values()):
                if getattr(module, "__name__", "").startswith("guild."):
                    for name in guild.__all__:
                        value = vars(module).get(name)
                        if isinstance(value, type):
                            found[name] = value.__module__
            print(json.dumps(found))
            """
        )
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        found: dict[str, str] = json.loads(out)
        import guild

        classes = {name for name in guild.__all__ if isinstance(getattr(guild, name), type)}
        assert set(found) == classes
        assert set(found.values()) == {"guild"}

    def test_a_pickle_made_before_any_lookup_names_guild_and_loads(self) -> None:
        code = textwrap.dedent(
            """
            import pickle, sys
            import guild
            from guild._job import Job
            from guild._errors import Reject
            data = pickle.dumps((Job(queue="q", payload=[1]), Reject("no")))
            assert b"guild._job" not in data and b"guild._errors" not in data, data
            sys.stdout.buffer.write(data)
            """
        )
        data = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, check=True
        ).stdout
        load = "import pickle, sys\njob, error = pickle.loads(sys.stdin.buffer.read())\n"
        load += "print(type(job).__module__, job.queue, job.payload, type(error).__name__)\n"
        out = subprocess.run(
            [sys.executable, "-c", load], cwd=ROOT, input=data, capture_output=True, check=True
        ).stdout
        assert out.decode().split() == ["guild", "q", "[1]", "Reject"]

    def test_the_parent_of_processes_n_spawns_without_the_runtime(self, tmp_path: Path) -> None:
        # The parent runs up to its supervisor (trio.run, which starts the
        # children) without importing the app or building a worker.
        (tmp_path / "noted_app.py").write_text("raise SystemExit('the parent imported the app')\n")
        code = textwrap.dedent(
            f"""
            import json, sys
            import trio

            def spawn(*args, **kwargs):
                print(json.dumps([m for m in {RUNTIME[:3]!r} if m in sys.modules]))
                return 0

            trio.run = spawn
            sys.path.insert(0, {str(tmp_path)!r})
            from guild.cli import main
            url = "sqlite:///" + {str(tmp_path / "jobs.db")!r}
            sys.exit(main(["run", "noted_app:app", "--broker", url, "--processes", "2"]))
            """
        )
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        assert json.loads(out.splitlines()[-1]) == []
