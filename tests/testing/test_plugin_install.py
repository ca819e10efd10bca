"""The pytest plugin in a fresh venv with guild, its runtime dependencies and pytest only.

The plugin is loaded into every pytest run of everyone who installs guild; here
it must leave an unrelated project's tests alone, import no extra, and tell a
test that asks for one of its fixtures which extra to install.
"""

from __future__ import annotations

import subprocess
import tomllib
import venv
from pathlib import Path

import pytest

import guild

ROOT = Path(__file__).resolve().parents[2]
EXTRA = "pip install 'guild[testing]'"

pytestmark = pytest.mark.slow


def _run(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding guild (editable, no extras), its runtime dependencies and pytest."""
    home = tmp_path_factory.mktemp("venv")
    venv.create(home, with_pip=True)
    python = home / "bin" / "python"
    runtime = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for argv in (
        ["install", "--quiet", "--no-deps", "-e", str(ROOT)],
        ["install", "--quiet", *runtime, "pytest"],
    ):
        done = _run(python, "-m", "pip", *argv)
        assert done.returncode == 0, done.stderr
    return python


def _project(tmp_path: Path, source: str) -> Path:
    (tmp_path / "test_it.py").write_text(source)
    return tmp_path


def test_the_venv_has_no_extras(python: Path) -> None:
    for extra in ("hypothesis", "pytest_trio"):
        done = _run(python, "-c", f"import {extra}")
        assert done.returncode == 1 and "ModuleNotFoundError" in done.stderr


def test_an_unrelated_project_passes(python: Path, tmp_path: Path) -> None:
    project = _project(
        tmp_path,
        "import sys\n"
        "\n"
        "def test_arithmetic():\n"
        "    assert 1 + 1 == 2\n"
        "\n"
        "def test_guild_plugin_loaded_and_imported_no_extra(request):\n"
        "    assert request.config.pluginmanager.hasplugin('guild')\n"
        "    assert 'guild.testing._plugin' in sys.modules\n"
        "    assert 'hypothesis' not in sys.modules\n"
        "    assert 'pytest_trio' not in sys.modules\n",
    )
    done = _run(python, "-m", "pytest", "-p", "no:cacheprovider", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


@pytest.mark.parametrize("fixture", ["memory_broker", "run_app"])
def test_a_fixture_names_its_extra(python: Path, tmp_path: Path, fixture: str) -> None:
    project = _project(tmp_path, f"def test_uses_it({fixture}):\n    pass\n")
    done = _run(python, "-m", "pytest", "-p", "no:cacheprovider", cwd=project)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"guild's {fixture} fixture runs on pytest-trio" in done.stdout
    assert EXTRA in done.stdout


def test_guild_testing_imports_and_names_the_extra_where_needed(python: Path) -> None:
    script = (
        "import guild.testing\n"
        "assert callable(guild.testing.check_broker)\n"
        "try:\n"
        "    guild.testing.Simulator\n"
        "except ModuleNotFoundError as error:\n"
        "    print(error)\n"
    )
    done = _run(python, "-c", script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"guild.testing.Simulator needs Hypothesis: {EXTRA}"


async def test_with_the_extras_the_fixtures_are_the_real_ones(
    memory_broker: guild.MemoryBroker,
) -> None:
    """This suite has pytest-trio: the same fixture gives a working broker."""
    await memory_broker.enqueue([guild.Job(queue="q")])
    assert (await memory_broker.stats(["q"]))["q"].ready == 1
