"""FastAPI producer: one guild.AsyncClient for the app's lifetime ($GUILD_BROKER)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException

import guild


@asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[None]:
    async with guild.AsyncClient() as client:  # sqlite:PATH or redis://HOST from $GUILD_BROKER
        api.state.guild = client
        yield


api = FastAPI(lifespan=lifespan)


@api.post("/thumbnails", status_code=202)
async def create(body: dict[str, str]) -> dict[str, str]:
    client: guild.AsyncClient = api.state.guild
    job = await client.enqueue("thumbnails", body, key=f"thumb:{body['url']}")
    return {"job": job.id}


@api.get("/thumbnails/{job_id}")
async def show(job_id: str, wait: float = 0.0) -> dict[str, object]:
    client: guild.AsyncClient = api.state.guild
    try:
        result = await client.result(job_id, wait=min(wait, 30.0))
        if result is None:
            return {"status": (await client.status(job_id)).value}
    except guild.UnknownJob:
        raise HTTPException(status_code=404, detail=f"no job {job_id}") from None
    return {"status": result.status.value, "value": result.value, "error": result.error}


@api.delete("/thumbnails/{job_id}")
async def cancel(job_id: str) -> dict[str, bool]:
    client: guild.AsyncClient = api.state.guild
    return {"cancelled": job_id in await client.cancel(job_id)}
