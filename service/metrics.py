"""Prometheus metrics, registered once per process on the default registry."""

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "anjeon_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "anjeon_http_request_seconds", "Time to answer an HTTP request", ["method", "route"]
)
CITIZENS_REGISTERED = Counter("anjeon_citizens_registered_total", "Citizens registered")
JOB_RUNS = Counter("anjeon_job_runs_total", "Scheduled job runs", ["job", "outcome"])
