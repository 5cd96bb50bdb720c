"""GET /metrics: the status dict as Prometheus metrics, plus the ingestion-latency histogram.

prometheus_client writes the exposition format (label escaping included). Each app has its own
CollectorRegistry, not the process-wide default: tests run several servers in one process, and
a metric registered twice in one registry is an error. The status values are read when scraped,
by a custom collector, so they cannot drift from GET /status.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4   # the format generate_latest writes

# POST /training/examples waits for a group commit (an fdatasync): milliseconds when idle,
# more while training competes for the disk and the CPU.
INGEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                  10.0, 30.0)


def _rows(s: dict) -> list[tuple[str, type, str, object]]:
    """(name, family, help, value) of each single-valued metric; value None: no sample."""
    ex, tr, wal = s["examples"], s["training"], s["wal"]
    gauge, counter = GaugeMetricFamily, CounterMetricFamily
    return [
        ("pyhexz_checkpoint", gauge, "latest published checkpoint", s["checkpoint"]),
        ("pyhexz_examples_received_total", counter, "examples accepted since start",
         ex["received"]),
        ("pyhexz_examples_recovered_total", counter, "examples replayed from the WAL at start",
         ex["recovered"]),
        ("pyhexz_examples_pending", gauge, "accepted examples not yet in a checkpoint",
         ex["pending"]),
        ("pyhexz_examples_trained_total", counter, "examples in the model's checkpoints",
         ex["trained"]),
        ("pyhexz_examples_per_second", gauge, "examples accepted per second (last minute)",
         ex["per_second"]),
        ("pyhexz_games_received_total", counter, "self-play games accepted since start",
         s["games"]["received"]),
        ("pyhexz_games_per_second", gauge, "games accepted per second (last minute)",
         s["games"]["per_second"]),
        ("pyhexz_training_in_progress", gauge, "1 while a training run is going on",
         int(tr["in_progress"])),
        ("pyhexz_training_runs_total", counter, "training runs since start", tr["runs"]),
        ("pyhexz_training_failures_total", counter, "training runs discarded since start",
         tr["failures"]),
        ("pyhexz_policy_loss", gauge, "policy loss of the last run",
         tr["last"].get("policy_loss")),
        ("pyhexz_value_loss", gauge, "value loss of the last run", tr["last"].get("value_loss")),
        ("pyhexz_wal_bytes", gauge, "bytes held in the write-ahead log",
         wal["end"] - wal["first"]),
        ("pyhexz_wal_commits_total", counter, "group commits (fdatasync) since start",
         wal["commits"]),
        ("pyhexz_up", gauge, "1 while the trainer is healthy", int(bool(s["ready"]))),
        ("pyhexz_uptime_seconds", gauge, "seconds since start", s["uptime_seconds"]),
    ]


class StatusCollector:
    """The status dict's numbers, read at each scrape (counters end in _total)."""

    def __init__(self, status: Callable[[], dict]) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        s = self.status()
        model = s["model"]
        for name, family, help_, value in _rows(s):
            metric = family(name, help_, labels=["model"])
            if value is not None:
                metric.add_metric([model], value)
            yield metric
        requests = CounterMetricFamily("pyhexz_requests_total",
                                       "answers to POST /training/examples by status",
                                       labels=["model", "status"])
        for status, n in sorted(s["requests"].items()):
            requests.add_metric([model, status], n)
        yield requests


class ServerMetrics:
    """One app's registry: the status collector and the ingestion-latency histogram."""

    def __init__(self, model: str, status: Callable[[], dict]) -> None:
        self.model = model
        self.registry = CollectorRegistry()
        self.registry.register(StatusCollector(status))
        self.ingest_seconds = Histogram(
            "pyhexz_ingest_seconds",
            "seconds from the start of a POST /training/examples request to its answer, by "
            "the answer's status", labelnames=["model", "status"], buckets=INGEST_BUCKETS,
            registry=self.registry)

    def observe_ingest(self, seconds: float, status: str) -> None:
        self.ingest_seconds.labels(self.model, status).observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)

