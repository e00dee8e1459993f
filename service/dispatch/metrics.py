"""Per-process dispatch metrics: how long this process's sends took, and the delivery reports
it applied. What the ledger holds (sent, failed, queued, oldest) is read from the database at
scrape time instead: a counter here would miss the work of every other process and the CLI."""

from prometheus_client import Counter, Histogram

SEND_SECONDS = Histogram(
    "anjeon_alert_send_seconds",
    "Time one send to a provider took in this process, by notifier",
    ["notifier"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DELIVERY = Counter(
    "anjeon_alert_delivery_reports_total",
    "Delivery reports this process applied, by the status they set",
    ["status"],
)
