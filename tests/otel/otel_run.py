"""A small recorded run for the OpenTelemetry tests: events that complete, fail and are
denied once, a model call shaped like an OpenAI chat completion, and mail that is
delivered or dead-lettered."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import lionstore
from lionstore import Event, Exchange, Executor, IDType, Processor, Source

SECRET_REPLY = "the-secret-reply-7f3a"


class Chore(Event):
    n: int = 0
    fail: bool = False

    async def invoke(self) -> None:
        if self.fail:
            raise RuntimeError(f"chore {self.n} broke")
        self.response = {"done": self.n}


class ChatCall(Event):
    """A model call as the lionagi integration records one: the request in ``payload``,
    the provider's answer (with usage) as the response."""

    payload: dict[str, Any] = {}

    async def invoke(self) -> None:
        self.response = {
            "id": "chatcmpl-1",
            "model": "tiny-model-2026",
            "choices": [{"message": {"role": "assistant", "content": SECRET_REPLY}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        }


class OnceDenied(Processor):
    """Denies the event with n == 2 once, then lets it through."""

    denied: ClassVar[set[int]] = set()

    async def request_permission(self, **kwargs: Any) -> bool:
        n = kwargs.get("n")
        if n == 2 and n not in self.denied:
            self.denied.add(n)
            return False
        return True


class ChoreDenied(Chore):
    @property
    def request(self) -> dict[str, Any]:
        return {"n": self.n}


class ChoreExecutor(Executor):
    processor_type = OnceDenied


class Agent(Source):
    name: str = ""


CONFIG = {"queue_capacity": 4, "capacity_refresh_time": 0.01}


async def record_run(path: Path, label: str = "otel-run") -> dict[str, Any]:
    """Write the run; return what the tests check against (ids, names)."""
    OnceDenied.denied = set()  # each recorded run has its one denial
    async with lionstore.open(path, run=label) as store:
        chores = ChoreExecutor(CONFIG, name="chores")
        await chores.start()
        events = [ChoreDenied(n=1), ChoreDenied(n=2), ChoreDenied(n=3, fail=True)]
        await chores.extend(events)
        await chores.forward()
        await chores.join()
        chores.close()

        models = Executor(CONFIG, name="models")
        await models.start()
        call = ChatCall(payload={"model": "tiny-model-2026", "messages": [{"role": "user"}]})
        await models.append(call)
        await models.forward()
        models.close()

        alice, bob = Agent(name="alice"), Agent(name="bob")
        exchange = Exchange(name="post")
        await exchange.add_source([alice, bob])
        hello = exchange.create_mail(alice, bob, "message", "hello bob")
        lost = exchange.create_mail(alice, IDType.create(), "message", "anyone?")
        await alice.send(hello)
        await alice.send(lost)
        await exchange.collect_all()
        await exchange.deliver_all()
        return {
            "run_id": str(store.run_id),
            "events": [str(e.id) for e in events],
            "call": str(call.id),
            "hello": str(hello.id),
            "lost": str(lost.id),
        }
