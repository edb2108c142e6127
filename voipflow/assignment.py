"""No idle consumers: rejoin the group when a subscribed consumer holds no partitions
while its topics have some.

Why this exists
---------------
A kafka-python consumer that subscribes before its topics exist (a sink
started beside a worker that creates them, a demo's first seconds) joins its
group with metadata that lists no partitions. The group leader then computes
an empty assignment ("No partition metadata for topic ..."). The client is
meant to notice the topics' partitions at its next metadata refresh and
rejoin, but that refresh and the join race: a refresh that lands while the
join is in flight is folded into the snapshot the assignment is compared
with, so the consumer never sees a change, and the next regular refresh comes
only after ``metadata_max_age_ms`` (5 min by default), after which the same
race can repeat. Reproduced here with 4 topics created 0-3 s after the
subscription: 3 of 12 consumers stayed without partitions for the whole 20 s
they were watched, beside a backlog.

What it does
------------
:class:`AssignmentWatch` is called from the consumer's own poll loop. While
the consumer holds partitions it costs one ``assignment()`` call. Once it has
held none for ``grace_s``, it fetches fresh metadata (``topics()``, a real
metadata request, which alone lets the group leader see the new partitions)
and, if the subscribed topics have partitions, leaves and rejoins the group
(``unsubscribe()`` + ``subscribe()`` with the same rebalance listener). Each
rejoin is counted (``voipflow_kafka_rejoins``) and logged. Repeated rejoins
back off (doubling up to ``max_backoff_s``); the backoff starts over when the
topics' partitions change, so a group with more consumers than partitions
(where being idle is correct) is not rebalanced again and again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import Counter

log = logging.getLogger(__name__)

REJOINS = Counter(
    "voipflow_kafka_rejoins",
    "Consumer group rejoins forced because a consumer held no partitions while its topics had some",
    ["component"],
)

#: Seconds without partitions before the watch looks at the topics.
DEFAULT_GRACE_S = 3.0
#: Longest wait between two forced rejoins while the partitions stay the same.
DEFAULT_MAX_BACKOFF_S = 300.0


def no_auto_create(consumer: Any) -> None:
    """Make ``consumer``'s metadata requests never create topics.

    kafka-python 3.0 accepts ``allow_auto_create_topics=False`` but builds its
    metadata cache without it, so a consumer that subscribes before the
    topics exist creates them, with the broker's default of one partition,
    and the topics' real creator then finds them there, too small. Passing
    the option and setting it here covers both this and later versions.
    """
    manager = getattr(consumer, "_manager", None)
    cluster = getattr(manager, "cluster", None)
    config = getattr(cluster, "config", None)
    if isinstance(config, dict):
        config["allow_auto_create_topics"] = False


class AssignmentWatch:
    """Rejoins a kafka-python consumer's group when it sits idle beside partitions.

    ``consumer`` is a subscribed ``KafkaConsumer``; ``topics`` and
    ``listener`` are what it was subscribed with. Call :meth:`check` from the
    thread that polls the consumer (kafka-python consumers are not thread
    safe), after each ``poll()``.
    """

    def __init__(
        self,
        consumer: Any,
        topics: Iterable[str],
        listener: Any = None,
        *,
        component: str,
        grace_s: float = DEFAULT_GRACE_S,
        max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.topics = sorted(set(topics))
        self.listener = listener
        self.component = component
        self.grace_s = grace_s
        self.max_backoff_s = max_backoff_s
        self._clock = clock
        self._unassigned_since: float | None = None
        self._due = 0.0
        self._backoff = grace_s
        self._last_partitions: frozenset[tuple[str, int]] = frozenset()
        #: Forced rejoins so far (also in ``voipflow_kafka_rejoins``).
        self.rejoins = 0

    def check(self) -> bool:
        """Rejoin if due; True when it did."""
        now = self._clock()
        if self.consumer.assignment():
            self._unassigned_since = None
            self._backoff = self.grace_s
            return False
        if self._unassigned_since is None:
            self._unassigned_since = now
            self._due = now + self.grace_s
            return False
        if now < self._due:
            return False
        partitions = self._partitions()
        if not partitions:
            # Nothing to consume yet: look again soon, the topics may be created.
            self._due = now + self.grace_s
            return False
        if partitions != self._last_partitions:
            self._backoff = self.grace_s
            self._last_partitions = partitions
        self._rejoin(now, partitions)
        self._backoff = min(self._backoff * 2, self.max_backoff_s)
        self._due = now + self._backoff
        return True

    def _partitions(self) -> frozenset[tuple[str, int]]:
        """Partitions of the subscribed topics, from metadata fetched just now."""
        from kafka.errors import KafkaError

        try:
            # A metadata request for all topics: it also refreshes the
            # client's cache, the one the group leader assigns from.
            self.consumer.topics()
            return frozenset(
                (topic, p)
                for topic in self.topics
                for p in self.consumer.partitions_for_topic(topic)
            )
        except KafkaError as exc:
            log.warning("metadata refresh failed", extra={"error": str(exc)})
            return frozenset()

    def _rejoin(self, now: float, partitions: frozenset[tuple[str, int]]) -> None:
        idle_s = now - (self._unassigned_since or now)
        self.rejoins += 1
        REJOINS.labels(self.component).inc()
        log.warning(
            "consumer holds no partitions while its topics have some; rejoining the group",
            extra={
                "component": self.component,
                "topics": ",".join(self.topics),
                "partitions": len(partitions),
                "idle_s": round(idle_s, 1),
                "rejoins": self.rejoins,
            },
        )
        self.consumer.unsubscribe()
        if self.listener is None:
            self.consumer.subscribe(self.topics)
        else:
            self.consumer.subscribe(self.topics, listener=self.listener)
