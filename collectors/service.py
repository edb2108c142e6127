"""One collector worker: receive, admit, decode, batch, output; report.

:class:`Collector` is a component (inert constructor, ``start()``,
``stop()``) whose :meth:`Collector.run` loop owns the thread it runs on::

    wait for a socket (at most until the next batch or report is due)
    drain every ready socket (up to ``recv_burst`` datagrams each); if that
      was less than a burst, wait ``coalesce_ms`` and drain again
    admit each datagram (allowlist, rate limit)       per datagram, no parsing
    decode them all in one call                       numpy per template
    accumulate; when due: output.write(batch)         split by exporter, encode
    once a second: metrics, kernel drops, retries; every health interval: health

Graceful stop: :meth:`Collector.stop` (from a signal handler through
:meth:`request_stop`, or after ``run`` returned) decodes what is already in
the socket buffers, writes the pending batch, flushes the output (Kafka
within ``stop_timeout_s``) and saves the template cache and the sequence
trackers (:mod:`voipflow.collectors.seqstate`), both also saved every
``template_save_interval_s``.

Errors::

    CollectorStartError     a listen address cannot be bound (from
                            ReceiverError), or the output cannot start
"""

from __future__ import annotations

import gc
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np

from voipflow.collectors.admission import Admission
from voipflow.collectors.batching import Accumulator, MessageEncoder, exporter_ranges
from voipflow.collectors.codec import core
from voipflow.collectors.codec.assemble import concat
from voipflow.collectors.codec.decoder import Decoder
from voipflow.collectors.codec.frame import Frame
from voipflow.collectors.codec.templates import TemplateCacheError
from voipflow.collectors.config import CollectorConfig, split_listen, split_networks
from voipflow.collectors.health import ExporterTracker
from voipflow.collectors.metrics import CollectorMetrics
from voipflow.collectors.outputs import Output
from voipflow.collectors.receiver import COMPILED as COMPILED_READ
from voipflow.collectors.receiver import (
    MAX_DATAGRAM,
    ListenSocket,
    ReceiverError,
    drain_into,
    drain_senders,
    open_sockets,
    read_kernel_drops,
)
from voipflow.collectors.seqstate import SequenceState, state_paths
from voipflow.schemas.flowbatch import make_batch, text_to_addr16

log = logging.getLogger(__name__)

#: Seconds between metric pushes, kernel drop reads and retry pumps.
TICK_S = 1.0
#: Longest wait in select, so a stop request is seen promptly.
MAX_WAIT_S = 0.2


class CollectorStartError(Exception):
    """The collector could not start; ``str()`` is one line naming the cause."""


def template_paths(directory: Path, cache_file: str, worker: int) -> tuple[Path, list[Path]]:
    """(this worker's cache file, every worker's cache files) under ``directory``.

    ``collector-templates.json`` becomes ``collector-templates-<worker>.json``;
    a worker loads all of them at start because the kernel may send an
    exporter to another worker after the number of workers changed.
    """
    base = Path(cache_file)
    own = directory / f"{base.stem}-{worker}{base.suffix}"
    return own, sorted(directory.glob(f"{base.stem}-*{base.suffix}"))


class Collector:
    """A receiving worker process's collector (see the module docstring)."""

    def __init__(
        self,
        config: CollectorConfig,
        output: Output,
        *,
        metrics: CollectorMetrics | None = None,
        state_dir: Path | None = None,
        worker: int = 0,
        sockets: list[ListenSocket] | None = None,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.name = f"collector-{worker}"
        self.config = config
        self.output = output
        self.metrics = metrics
        self.worker = worker
        self.state_dir = state_dir
        self.sockets: list[ListenSocket] = list(sockets or [])
        self._own_sockets = sockets is None
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.templates = config.template_cache()
        self.decoder = Decoder(self.templates, config.decoder_config())
        self.admission = Admission(
            split_networks(config.allow), config.rate_limit_pps, config.rate_limit_burst
        )
        self.accumulator = Accumulator(config.batch_max_records, config.batch_max_delay_ms)
        self.tracker = ExporterTracker(
            f"{socket.gethostname()}:{os.getpid()}",
            metrics,
            max_labels=config.max_exporter_labels,
            max_domains=config.max_health_domains,
        )
        self.sequences: SequenceState | None = None
        if state_dir is not None and config.template_cache_file:
            own, _ = state_paths(state_dir, config.template_cache_file, worker)
            self.sequences = SequenceState(
                own,
                lambda: state_paths(state_dir, config.template_cache_file, worker)[1],
                config.template_expiry_s,
                self.tracker.exporter_text,
            )
        self._stop = threading.Event()
        self._addr16: dict[str, bytes] = {}
        self._kernel_drops: dict[int, int] = {}
        self._kernel_drops_window = 0
        self._selector: selectors.BaseSelector | None = None
        # Receive buffer: a burst of datagrams back to back (a full burst of
        # 1500-byte datagrams fits; reading stops early rather than cut one).
        # the compiled burst read when built, unless the numpy path is asked for
        compiled_read = COMPILED_READ and config.codec_core != "numpy"
        self._drain: Callable[..., int] = drain_senders if compiled_read else drain_into
        self._buf = bytearray(max(config.recv_burst * 1500, 1 << 20) + MAX_DATAGRAM)
        self._view = memoryview(self._buf)
        self._coalesce_s = config.coalesce_ms / 1000.0
        self._started = False
        # Totals since start, for tests and benchmarks.
        self.datagrams = 0
        self.records = 0

    # -- life cycle ---------------------------------------------------------

    @property
    def template_file(self) -> Path | None:
        if self.state_dir is None or not self.config.template_cache_file:
            return None
        return template_paths(self.state_dir, self.config.template_cache_file, self.worker)[0]

    def start(self) -> None:
        if self._own_sockets:
            try:
                self.sockets = open_sockets(
                    split_listen(self.config.listen), self.config.rcvbuf_bytes
                )
            except ReceiverError as exc:
                raise CollectorStartError(str(exc.strerror or exc)) from exc
        for ls in self.sockets:
            level = logging.INFO
            if ls.rcvbuf_granted < ls.rcvbuf_requested:
                level = logging.WARNING
            log.log(
                level,
                "listening",
                extra={
                    "socket": ls.label,
                    "rcvbuf_requested": ls.rcvbuf_requested,
                    "rcvbuf_granted": ls.rcvbuf_granted,
                    "capped": ls.rcvbuf_granted < ls.rcvbuf_requested,
                },
            )
            if self.metrics is not None:
                self.metrics.rcvbuf.labels(ls.label).set(ls.rcvbuf_granted)
                # Present from the start, so a dashboard sees 0, not nothing.
                self.metrics.kernel_drops.labels(ls.label).inc(0)
        compiled = self.decoder.config.compiled_core and core.AVAILABLE
        log.log(
            logging.INFO if compiled or self.config.codec_core == "numpy" else logging.WARNING,
            "codec core",
            extra={
                "core": "compiled" if compiled else "numpy",
                "read": "compiled" if self._drain is drain_senders else "python",
                "setting": self.config.codec_core,
                **({} if core.AVAILABLE else {"hint": core.BUILD_HINT}),
            },
        )
        self._load_templates()
        if self.sequences is not None:
            self.sequences.load(self.decoder, self._clock_ms())
        self._warm_up()
        # Everything allocated so far (pyarrow, numpy, pandas modules) lives as
        # long as the process: keep it out of the cyclic collector's full
        # passes, which otherwise walk it again and again under load.
        gc.collect()
        gc.freeze()
        try:
            self.output.start()
        except Exception:
            self._close_sockets()
            raise
        self._kernel_drops = read_kernel_drops(ls.inode for ls in self.sockets)
        sel = selectors.DefaultSelector()
        for ls in self.sockets:
            sel.register(ls.sock, selectors.EVENT_READ, ls)
        self._selector = sel
        self._started = True

    def _warm_up(self) -> None:
        """Pay one-time costs before the first datagram instead of on it.

        pyarrow imports pandas on its first array conversion (about 0.2 s of
        CPU here); batching and encoding code paths are exercised once too.
        """
        two = np.array([text_to_addr16("192.0.2.1"), text_to_addr16("192.0.2.2")], dtype="S16")
        batch = concat([make_batch({"exporter_addr": two}), make_batch({"exporter_addr": two})])
        grouped, ranges = exporter_ranges(batch)
        rb = grouped.to_arrow()
        encoder = MessageEncoder(self.config.max_message_bytes)
        for _, start, end in ranges:
            encoder.encode(rb.slice(start, end - start))
        self.decoder.decode_frame(Frame.join([]), [], np.zeros(0, dtype=np.int64))

    def request_stop(self) -> None:
        """Ask :meth:`run` to return (safe from a signal handler)."""
        self._stop.set()

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        self._stop.set()
        # What the kernel already holds was sent to us: decode it too.
        self._receive_once(0.0)
        self._flush_batch()
        self.tracker.flush_metrics()
        self.output.health(self._health_reports())
        self.output.stop()
        self._save_templates()
        if self.sequences is not None:
            self.sequences.save(self.decoder, self._clock_ms(), orderly=True)
        if self._selector is not None:
            self._selector.close()
        self._close_sockets()

    def _close_sockets(self) -> None:
        if self._own_sockets:
            for ls in self.sockets:
                ls.close()

    def _load_templates(self) -> None:
        own = self.template_file
        if own is None or self.state_dir is None:
            return
        _, every = template_paths(self.state_dir, self.config.template_cache_file, self.worker)
        loaded = 0
        # Own file last, so its templates win over another worker's copy.
        for path in [p for p in every if p != own] + [own]:
            try:
                loaded += self.templates.load(path)
            except TemplateCacheError as exc:
                log.warning("template cache not loaded", extra={"error": str(exc)})
        if loaded:
            log.info("templates loaded", extra={"templates": loaded, "file": str(own)})

    def _save_templates(self) -> None:
        own = self.template_file
        if own is None:
            return
        try:
            own.parent.mkdir(parents=True, exist_ok=True)
            self.templates.save(own)
        except (OSError, TemplateCacheError) as exc:
            log.warning("template cache not saved", extra={"error": str(exc)})

    # -- the loop -----------------------------------------------------------

    def run(self) -> None:
        """Receive until :meth:`request_stop`; the caller then calls :meth:`stop`."""
        next_tick = time.monotonic() + TICK_S
        interval = self.config.health_interval_s
        next_health = time.monotonic() + interval if interval > 0 else float("inf")
        next_save = time.monotonic() + self.config.template_save_interval_s
        while not self._stop.is_set():
            now = time.monotonic()
            due = min(next_tick, next_health)
            deadline = self.accumulator.deadline()
            if deadline is not None:
                due = min(due, deadline)
            self._receive_once(min(MAX_WAIT_S, max(0.0, due - now)))
            now = time.monotonic()
            if self.accumulator.due(now):
                self._flush_batch()
            if now >= next_tick:
                next_tick = now + TICK_S
                self._tick()
            if now >= next_health:
                next_health = now + interval
                self.output.health(self._health_reports())
            if now >= next_save:
                next_save = now + self.config.template_save_interval_s
                self._save_templates()
                if self.sequences is not None:
                    now_ms = self._clock_ms()
                    self.sequences.forget_stale(self.decoder, now_ms)
                    self.sequences.save(self.decoder, now_ms, orderly=False)

    def _receive_once(self, timeout: float) -> int:
        """Wait up to ``timeout`` for datagrams, then read, admit and decode them."""
        sel = self._selector
        if sel is None:
            return 0
        # Datagrams land back to back in one buffer, which the decoder takes
        # whole (a frame): no bytes object per datagram, no join.
        sizes: list[int] = []
        # address text (Python read) or 16-byte address (compiled read) each
        senders: list[Any] = []
        burst = self.config.recv_burst
        view = self._view
        drain = self._drain
        pos = 0
        for key, _ in sel.select(timeout):
            pos = drain(key.fileobj, view, pos, burst, sizes, senders)
        if not sizes:
            return 0
        if len(sizes) < burst and self._coalesce_s > 0 and not self._stop.is_set():
            # Fewer than a burst: let more arrive so one decode call covers them.
            time.sleep(self._coalesce_s)
            for ls in self.sockets:
                pos = drain(ls.sock, view, pos, burst, sizes, senders)
        now_ms = self._clock_ms()
        frame = Frame.received(self._buf, sizes)
        if self._drain is drain_senders:
            exporters, keep = self._admit16(senders, now_ms)
        else:
            exporters, keep = self._admit(senders, now_ms)
        if keep is not None:
            frame = frame.select(keep)
        if exporters:
            self._decode(frame, exporters, now_ms)
        return len(sizes)

    def _admit(self, hosts: list[str], now_ms: int) -> tuple[list[bytes], np.ndarray | None]:
        """Each admitted datagram's exporter address (16 bytes), and which were
        admitted (None: all)."""
        addr16 = self._addr16
        out: list[bytes] = []
        append = out.append
        admission = self.admission
        if admission.open:
            found = list(map(addr16.get, hosts))  # C speed; new hosts looked up below
            if None in found:
                found = [
                    a if a is not None else self._exporter_addr(h)
                    for a, h in zip(found, hosts, strict=True)
                ]
            return cast(list[bytes], found), None
        check = admission.admit
        now_s = now_ms / 1000.0
        keep = np.zeros(len(hosts), dtype=bool)
        for i, host in enumerate(hosts):
            if not check(host, now_s):
                continue
            a16 = addr16.get(host)
            if a16 is None:
                a16 = self._exporter_addr(host)
            append(a16)
            keep[i] = True
        return out, keep

    def _admit16(self, senders: list[bytes], now_ms: int) -> tuple[list[bytes], np.ndarray | None]:
        """:meth:`_admit` of 16-byte sender addresses (the compiled read)."""
        if self.admission.open:
            return senders, None
        check = self.admission.admit
        text = self.tracker.exporter_text
        now_s = now_ms / 1000.0
        keep = np.fromiter((check(text(a), now_s) for a in senders), dtype=bool, count=len(senders))
        return [a for a, k in zip(senders, keep.tolist(), strict=True) if k], keep

    def _exporter_addr(self, host: str) -> bytes:
        if len(self._addr16) > 65536:
            self._addr16.clear()
        a16 = self._addr16[host] = text_to_addr16(host.partition("%")[0])
        return a16

    def _decode(self, frame: Frame, exporters: list[bytes], now_ms: int) -> None:
        t0 = time.perf_counter()
        try:
            res = self.decoder.decode_frame(frame, exporters, np.full(len(exporters), now_ms))
        except Exception:
            # The decoder raises nothing for bad input; this is a defect in
            # it. The group is counted as lost and receiving goes on.
            log.exception("decoder failed", extra={"datagrams": len(exporters)})
            self._count_internal_error(exporters)
            return
        if self.metrics is not None:
            self.metrics.decode_seconds.observe(time.perf_counter() - t0)
        self.datagrams += len(exporters)
        self.tracker.add(res.stats, now_ms)
        if self.sequences is not None and self.sequences.pending:
            self.sequences.report(self.decoder, res.stats, now_ms)
        for exporter, err in res.errors:
            log.warning(
                "bad export data",
                extra={
                    "exporter": self.tracker.exporter_text(exporter),
                    "reason": err.reason,
                    "error": str(err),
                },
            )
        if res.batch.num_rows:
            self.records += res.batch.num_rows
            per_exporter: dict[bytes, int] = {}
            for (exporter, _), st in res.stats.items():
                if st.records:
                    per_exporter[exporter] = per_exporter.get(exporter, 0) + st.records
            self.accumulator.add(res.batch, time.monotonic(), per_exporter)
            if self.accumulator.full():
                self._flush_batch()

    def _count_internal_error(self, exporters: list[bytes]) -> None:
        if self.metrics is None:
            return
        per: dict[bytes, int] = {}
        for exporter in exporters:
            per[exporter] = per.get(exporter, 0) + 1
        for exporter, n in per.items():
            self.metrics.decode_errors.labels(self.tracker.label(exporter), "internal").inc(n)

    def _flush_batch(self) -> None:
        batch = self.accumulator.take()
        if batch is None:
            return
        self.output.write(batch)
        if self.metrics is not None:
            self.metrics.output_records.inc(batch.num_rows)

    def _tick(self) -> None:
        self.output.poll()
        self.tracker.flush_metrics()
        if self.sequences is not None and self.sequences.counted_since_save:
            self.sequences.save(self.decoder, self._clock_ms(), orderly=False)
        m = self.metrics
        refused = self.admission.take_refused()
        if m is not None:
            for (host, reason), n in refused.items():
                m.refused.labels(m.refused_label(host), reason).inc(n)
        drops = read_kernel_drops(ls.inode for ls in self.sockets)
        for ls in self.sockets:
            now = drops.get(ls.inode)
            if now is None:
                continue
            delta = now - self._kernel_drops.get(ls.inode, 0)
            if delta > 0:
                self._kernel_drops_window += delta
                if m is not None:
                    m.kernel_drops.labels(ls.label).inc(delta)
                log.warning("kernel dropped datagrams", extra={"socket": ls.label, "drops": delta})
            self._kernel_drops[ls.inode] = now

    def _health_reports(self) -> list[dict[str, object]]:
        drops, self._kernel_drops_window = self._kernel_drops_window, 0
        return self.tracker.health_reports(self._clock_ms(), drops)
