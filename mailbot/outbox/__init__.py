"""The outbox: every external effect (a draft APPENDed, a message flagged or moved, a reply
sent) is a row committed with the state change that calls for it, then performed once."""
