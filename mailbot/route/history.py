"""How a message is tied to the customer's earlier messages of the same thread.

The ledger's side (`mailbot.pipeline.context`) counts the earlier ones already committed;
`count_in_batch` those processed in the same batch, which the ledger does not show yet.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mailbot.parse.message import InboundMessage
from mailbot.route.rules import thread_subject


@dataclass(frozen=True, slots=True)
class ThreadKey:
    """How a message is tied to its thread: its ids, references, sender and subject."""

    message_pk: int
    message_id: str | None
    references: tuple[str, ...]
    sender: str
    subject: str  # as `thread_subject` normalises it

    @classmethod
    def of(cls, message_pk: int, message: InboundMessage) -> ThreadKey:
        refs = tuple(dict.fromkeys((*message.references, *filter(None, [message.in_reply_to]))))
        sender = message.from_addr.email.lower() if message.from_addr else ""
        return cls(message_pk, message.message_id, refs, sender, thread_subject(message.subject))

    def follows(self, earlier: ThreadKey) -> bool:
        """Whether `earlier` is this customer's earlier message in the same thread."""
        if earlier.message_pk >= self.message_pk or earlier.sender != self.sender:
            return False
        linked = earlier.message_id is not None and earlier.message_id in self.references
        return linked or (bool(self.subject) and earlier.subject == self.subject)


def count_in_batch(key: ThreadKey, others: Iterable[ThreadKey]) -> int:
    """Earlier messages of the same thread among those processed together (not yet
    committed, so the ledger does not show them)."""
    return sum(1 for other in others if key.follows(other))
