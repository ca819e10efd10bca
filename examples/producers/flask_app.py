"""Flask producer: one guild.Client per process, shared by every request thread."""

from flask import Flask, abort, request

import guild


def create_app(broker_url: str | None = None) -> Flask:
    app = Flask(__name__)
    # Thread-safe; closed at interpreter exit if you never close it yourself.
    client = guild.Client(broker_url)  # None: $GUILD_BROKER
    app.extensions["guild"] = client

    @app.post("/thumbnails")
    def create() -> tuple[dict[str, str], int]:
        body = request.get_json()
        job = client.enqueue("thumbnails", body, key=f"thumb:{body['url']}")
        return {"job": job.id}, 202

    @app.get("/thumbnails/<job_id>")
    def show(job_id: str) -> dict[str, object]:
        wait = min(request.args.get("wait", 0.0, type=float), 30.0)
        try:
            result = client.result(job_id, wait=wait)
            if result is None:
                return {"status": client.status(job_id).value}
        except guild.UnknownJob:
            abort(404, f"no job {job_id}")
        return {"status": result.status.value, "value": result.value, "error": result.error}

    return app
