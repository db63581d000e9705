"""What the server counts about itself, in Prometheus' text exposition format (``GET /metrics``).

(Not to be confused with ``fmnist.metrics``, which scores a model's predictions.)

Requests by route template and status, the forward pass's latency and the number of images
per pass, as histograms. Kept by hand (a few dicts under one lock): the format is small and
fixed, so a client library would add a dependency and nothing else.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)  # seconds
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)  # images per forward pass
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    """Cumulative buckets, a sum and a count, as Prometheus expects them."""

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds, self.counts, self.sum, self.count = bounds, [0] * len(bounds), 0.0, 0

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.bounds, value)
        if i < len(self.counts):
            self.counts[i] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, n in zip(self.bounds, self.counts, strict=True):
            running += n
            out.append(f'{name}_bucket{{le="{bound:g}"}} {running}')
        out += [f'{name}_bucket{{le="+Inf"}} {self.count}', f"{name}_sum {self.sum:.6f}", f"{name}_count {self.count}"]
        return out


class Telemetry:
    """The server's counters; safe to update from the event loop and the inference thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str, int]] = Counter()  # (method, route, status) -> count
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batch_size = Histogram(BATCH_BUCKETS)

    def request(self, method: str, route: str, status: int) -> None:
        with self._lock:
            self.requests[(method, route, status)] += 1

    def forward_pass(self, images: int, seconds: float) -> None:
        with self._lock:
            self.latency.observe(seconds)
            self.batch_size.observe(images)

    def render(self) -> str:
        """The exposition text: HELP and TYPE lines, then samples."""
        with self._lock:
            lines = [
                "# HELP fmnist_requests_total HTTP requests answered, by method, route and status.",
                "# TYPE fmnist_requests_total counter",
            ]
            for (method, route, status), n in sorted(self.requests.items()):
                lines.append(
                    f'fmnist_requests_total{{method="{method}",route="{_escape(route)}",status="{status}"}} {n}'
                )
            lines += [
                "# HELP fmnist_inference_seconds Time of one forward pass (all images batched into it).",
                "# TYPE fmnist_inference_seconds histogram",
                *self.latency.lines("fmnist_inference_seconds"),
                "# HELP fmnist_batch_size Images per forward pass.",
                "# TYPE fmnist_batch_size histogram",
                *self.batch_size.lines("fmnist_batch_size"),
            ]
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
