"""A plain script: enqueue a batch, then wait for each result ($GUILD_BROKER)."""

import sys

import guild

with guild.Client() as client:
    jobs = client.enqueue_many("thumbnails", [{"url": url} for url in sys.argv[1:]])
    for job in jobs:
        result = client.result(job, wait=60)
        if result is None:
            print(f"{job.id}: still {client.status(job).value}")
        elif result.ok:
            print(f"{job.payload['url']}: {result.value['thumbnail']}")
        else:
            print(f"{job.payload['url']}: {result.status.value}: {result.error}")
