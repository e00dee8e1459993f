"""The alert ledger: one row per advisory revision, citizen and channel, and every write to it.

Matching enqueues through `enqueue`, cancellations through `notices`, the dispatcher claims and
records through `outbox`; the states and their moves live in `states`. Nothing here knows the
dispatcher, the notifiers or the web layer."""
