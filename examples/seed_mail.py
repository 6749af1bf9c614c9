"""The mail system seed's usage example (seeds/mail-system.txt), as written.

    python examples/seed_mail.py [PATH]   (default: seed-mail-example.db)

lionstore's methods that write are async, so ``collect_all``, ``deliver_all`` and
``send_all`` are awaited; ``MySource.send`` stays synchronous, exactly as the seed
writes it. Its ``self.mailbox.append_out(mail)`` starts recording the mail at once;
the router's next await (here ``collect_all``) waits for that write before it
collects, so nothing is lost.

Both approaches run on the same two sources in one run. A source's ``mailbox`` is
the one of the router it joined last, so ``srcA.send(mail2)`` after the
MailManager was built goes through the manager; each router keeps its own mailbox
per source (``router.mailboxes[source.id]``).
"""

from __future__ import annotations

import asyncio
import sys

import lionstore
from lionstore import Communicatable, Exchange, IDType, Mailbox, MailManager, PackageCategory


class MySource(Communicatable):
    # Must define 'mailbox' and 'send' method for Communicatable
    def __init__(self) -> None:
        self.id = IDType.create()
        self.mailbox = Mailbox()

    def send(self, mail: lionstore.Mail) -> None:
        self.mailbox.append_out(mail)


async def main(path: str) -> None:
    async with lionstore.open(path) as store:  # a fresh run; the routers use this store
        # Create two sources
        srcA, srcB = MySource(), MySource()  # noqa: N806 - the seed's names

        # Approach 1: Use Exchange
        exchange = Exchange([srcA, srcB])
        mail = exchange.create_mail(
            sender=srcA,
            recipient=srcB,
            category=PackageCategory.MESSAGE,
            item="Hello from A!",
        )
        srcA.send(mail)
        collected = await exchange.collect_all()
        delivered = await exchange.deliver_all()
        print(f"exchange: collected {collected}, delivered {delivered}")

        # Approach 2: Use MailManager
        manager = MailManager([srcA, srcB])
        mail2 = manager.create_mail(
            sender=srcA.id,
            recipient=srcB.id,
            category=PackageCategory.MESSAGE,
            package="Another greeting",
        )
        # "Normally you'd place mail2 in srcA's mailbox, then manager.collect_all() ->
        # manager.send_all()."
        srcA.send(mail2)
        collected = await manager.collect_all()
        sent = await manager.send_all()
        print(f"manager: collected {collected}, sent {sent}")

        for name, router in (("exchange", exchange), ("manager", manager)):
            inbox = router.mailboxes[srcB.id].pile_
            print(f"B's inbox in the {name}: {[m.package.item for m in inbox]}")
        print(f"run {store.run_id}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "seed-mail-example.db"))
