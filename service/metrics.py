"""Per-process Prometheus metrics: what this process itself did (requests it answered, jobs it
ran). Figures about the data (queue, ledger, registry) are read from the database when /metrics
is scraped (service/operations/figures.py), so every process reports the same ones."""

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "anjeon_http_requests_total",
    "HTTP requests this process answered, by method (other when not a standard one), route "
    "template (unmatched when none) and status",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "anjeon_http_request_seconds",
    "Time this process took to answer an HTTP request",
    ["method", "route"],
)
CITIZENS_REGISTERED = Counter(
    "anjeon_citizens_registered_total",
    "Registrations this process's API accepted (anjeon_citizens counts every citizen)",
)
JOB_RUNS = Counter(
    "anjeon_job_runs_total", "Scheduled job runs in this process", ["job", "outcome"]
)
STAFF_UNCOUNTED = Counter(
    "anjeon_staff_requests_uncounted_total",
    "Staff requests let through uncounted because the rate-limit storage was unavailable",
)
RATE_LIMITED = Counter(
    "anjeon_rate_limited_total",
    "Requests and code messages this process refused by a rate limit, by rule",
    ["rule"],
)
MESSAGE_BUDGET_EXHAUSTED = Counter(
    "anjeon_message_budget_exhausted_total",
    "SMS that are not alerts (codes, confirmations) this process held back because the day's "
    "budget (ANJEON_SMS_DAILY_BUDGET) was spent; any increase means codes have stopped",
)
UNREADABLE_VALUES = Counter(
    "anjeon_unreadable_values_total",
    "Sealed personal values this process read that no listed data secret opens (a data secret "
    "dropped from ANJEON_DATA_KEYS before anjeon reseal was done), by field",
    ["field"],
)
EVENT_LOOP_LATE = Counter(
    "anjeon_event_loop_late_seconds_total",
    "Seconds this process's event loop woke later than asked, counted when 1 s or more late: "
    "every request it serves waited as long",
)
