"""mailbot: a support-mailbox worker with a small CPU model in charge."""

__version__ = "0.1.0"
