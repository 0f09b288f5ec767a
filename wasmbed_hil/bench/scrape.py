"""Read a Prometheus endpoint the way a Prometheus server does: one HTTP GET of the text
exposition format, parsed by prometheus_client's own parser (no regexes)."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from ..gateway.metrics import PREFIX, every_series


@dataclass(frozen=True)
class Scrape:
    """The samples of one scrape, by (sample name, sorted labels)."""

    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]
    types: dict[str, str]  # metric family name -> counter, gauge...

    def value(self, name: str, **labels: str) -> float:
        """The sample of that name whose labels include `labels`; KeyError if none or several
        match (a missing series is a failure, never a silent 0)."""
        found = [v for (n, ls), v in self.samples.items()
                 if n == name and set(labels.items()) <= set(ls)]
        if len(found) != 1:
            raise KeyError(f"{len(found)} samples {name}{labels or ''} in the scrape")
        return found[0]

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """{value of `label`: sample} over every sample of that name."""
        return {dict(ls)[label]: v for (n, ls), v in self.samples.items()
                if n == name and label in dict(ls)}


def parse(text: str) -> Scrape:
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return Scrape(samples, types)


def scrape(url: str, timeout: float = 10.0) -> Scrape:
    """GET `url` (http only) and parse it; OSError if it does not answer 200."""
    if not url.startswith("http://"):
        raise ValueError(f"not an http:// URL: {url!r}")
    with urllib.request.urlopen(url, timeout=timeout) as response:
        if response.status != 200:
            raise OSError(f"{url}: HTTP {response.status}")
        content_type = response.headers.get("Content-Type", "")
        if not content_type.startswith("text/plain"):
            raise OSError(f"{url}: not the text exposition format ({content_type})")
        return parse(response.read().decode("utf-8"))


def gateway_counters(s: Scrape, gateway: str) -> dict[str, int]:
    """The gateway's Counter (Gateway.metrics), keys as the gateway writes them, read back
    from a scrape of its /metrics: what the benchmarks compare before and after a window."""
    counters = {}
    for key, series in every_series():
        counters[key] = int(s.value(f"{PREFIX}{series.family}_total", gateway=gateway,
                                    **dict(series.labels)))
    return counters
