"""A process that sends a batch of model calls through a durable lionagi iModel
(``batch``), or resumes the batch after a crash (``resume``). Prints a JSON line."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import lionagi

import lionstore
from lionstore.integrations.lionagi import durable

NAME = "batch-model"


def make_model(url: str) -> Any:  # durable() returns the iModel it was given
    return durable(
        lionagi.iModel(
            provider="openai",
            base_url=url,
            model="gpt-4.1-mini",
            api_key="sk-worker-key",
            requires_tokens=False,
            allow_local_network=True,
        ),
        name=NAME,
        max_attempts=3,
        lease_seconds=1.0,
    )


async def main(mode: str, path: str, url: str, count: int) -> None:
    async with lionstore.open(path, run="batch"):
        imodel = make_model(url)
        if mode == "batch":
            messages = [[{"role": "user", "content": f"q{i}"}] for i in range(count)]
            calls = await asyncio.gather(*(imodel.invoke(messages=m) for m in messages))
            print(json.dumps({"statuses": [str(c.status) for c in calls]}), flush=True)
        else:
            executor = imodel.executor
            await asyncio.wait_for(executor.resume(), timeout=60)
            counts = executor.executor.status_counts()
            attempts = {
                e.payload["messages"][-1]["content"]: executor.executor.attempts(e)
                for e in executor.executor.pile
            }
            print(json.dumps({"counts": counts, "attempts": attempts}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
