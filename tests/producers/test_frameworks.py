"""The recipes of docs/producers.md, run as written: real servers, real HTTP, a real worker.

FastAPI runs under uvicorn (asyncio) and Flask under werkzeug's threaded server,
each on a loopback port, against a SQLite file and a redis-server, with the
worker app running so that results come back.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import uvicorn
from werkzeug.serving import make_server

from tests._redis_server import free_port

from .apps import running_worker

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "examples" / "producers"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def serving_uvicorn(api: Any) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        assert not thread.is_alive()


@contextmanager
def serving_werkzeug(app: Any) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="werkzeug")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        thread.join(timeout=60)


def exercise(base: str) -> None:
    """What both web recipes must do: accept, answer a result, 404 an unknown job."""
    with httpx.Client(base_url=base, timeout=60) as http:
        created = http.post("/thumbnails", json={"url": "cat.png"})
        assert created.status_code == 202, created.text
        job_id = created.json()["job"]
        again = http.post("/thumbnails", json={"url": "cat.png"})
        assert again.json()["job"] == job_id  # the key holds
        shown = http.get(f"/thumbnails/{job_id}", params={"wait": 30})
        assert shown.status_code == 200, shown.text
        assert shown.json() == {
            "status": "done",
            "value": {"thumbnail": "thumb-cat.png"},
            "error": None,
        }
        assert http.get("/thumbnails/no-such-job").status_code == 404


def test_fastapi_recipe(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUILD_BROKER", url)
    recipe = load("fastapi_app")
    with running_worker(url), serving_uvicorn(recipe.api) as base:
        exercise(base)
    assert not [t for t in threading.enumerate() if t.name.startswith("guild-client")]


def test_fastapi_recipe_reports_a_job_still_waiting(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GUILD_BROKER", sqlite_url)
    recipe = load("fastapi_app")
    with serving_uvicorn(recipe.api) as base, httpx.Client(base_url=base, timeout=60) as http:
        job_id = http.post("/thumbnails", json={"url": "later.png"}).json()["job"]
        assert http.get(f"/thumbnails/{job_id}").json() == {"status": "ready"}


def test_flask_recipe(url: str) -> None:
    recipe = load("flask_app")
    app = recipe.create_app(url)
    try:
        with running_worker(url), serving_werkzeug(app) as base:
            exercise(base)
    finally:
        app.extensions["guild"].close()
    assert not [t for t in threading.enumerate() if t.name.startswith("guild-client")]


def test_script_recipe(url: str) -> None:
    env = {**os.environ, "GUILD_BROKER": url}
    with running_worker(url):
        done = subprocess.run(
            [sys.executable, str(RECIPES / "script.py"), "a.png", "b.png"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    # On a Redis without persistence the broker logs a warning too (structlog's default
    # output is stdout): the script's own lines are those that name an image.
    printed = [line for line in done.stdout.splitlines() if ".png: " in line]
    assert printed == ["a.png: thumb-a.png", "b.png: thumb-b.png"]


@pytest.mark.parametrize("name", ["fastapi_app", "flask_app", "script"])
def test_the_docs_show_each_recipe_as_it_is(name: str) -> None:
    docs = (ROOT / "docs" / "producers.md").read_text()
    assert (RECIPES / f"{name}.py").read_text().strip() in docs
