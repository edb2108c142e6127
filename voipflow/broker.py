"""A real single-node Apache Kafka broker (KRaft) assembled from Maven Central jars.

No Docker and no Kafka tarball are needed: :func:`fetch_jars` resolves
``org.apache.kafka:kafka_2.13`` and a log4j2 backend with Maven into an
ignored, reusable folder (``.cache/kafka/<version>/libs``), and
:class:`LocalBroker` formats KRaft storage and runs
``java ... kafka.Kafka server.properties`` on 127.0.0.1 until it is ready.

A started broker leaves a state file (``<state_dir>/broker.json``: pid,
bootstrap address, ports, version) so that ``voipflow kafka status|stop`` work
from another process and :func:`resolve_bootstrap` finds the local broker when
``VOIPFLOW_KAFKA_BOOTSTRAP`` is empty.

Errors::

    BrokerError              anything about the local broker; one-line message
    +-- FetchError           Maven could not assemble the jars (output tail attached)
    +-- BrokerStartError     format or start failed, port in use, not ready in time
    |                        (the broker log's tail is attached)
    +-- BrokerNotRunning     no local broker where one was expected
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from voipflow.broker_security import BrokerSecurity, listener_properties, scram_format_args
from voipflow.logs import tail
from voipflow.netutil import free_port
from voipflow.schemas.topics import KafkaConfig

log = logging.getLogger(__name__)

#: Kafka release assembled by default: 4.1.x is the line the clients here
#: (aiokafka 0.14, kafka-python 3) are tested against.
KAFKA_VERSION = "4.1.2"
#: Kafka 4.x logs through SLF4J 1.7, hence the log4j2 binding for SLF4J 1.x.
LOG4J_VERSION = "2.24.3"
#: Pinned because Maven 3.8's default dependency plugin is too old for the POMs.
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
#: Where jars are kept, relative to the source tree this package lives in.
DEFAULT_CACHE_DIR = Path(__file__).resolve().parents[1] / ".cache" / "kafka"
STATE_FILE = "broker.json"
READY_LINE = "Kafka Server started"
_MARKER = ".complete"


class BrokerError(Exception):
    """A problem with the local Kafka broker; ``str()`` is one line plus context."""


class FetchError(BrokerError):
    """Maven could not assemble the broker's jars."""


class BrokerStartError(BrokerError):
    """The broker could not be formatted or started, or was not ready in time."""


class BrokerNotRunning(BrokerError):
    """No local broker is running where one was expected."""


# --------------------------------------------------------------------------- jars

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by voipflow to collect the Kafka broker's runtime classpath. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.voipflow</groupId>
  <artifactId>kafka-broker-classpath</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""


def jars_ready(libs: Path) -> bool:
    """True when ``libs`` holds a completed fetch (marker present, every jar there)."""
    marker = libs / _MARKER
    if not marker.is_file():
        return False
    try:
        names = json.loads(marker.read_text())["jars"]
    except (ValueError, KeyError):
        return False
    return bool(names) and all((libs / n).is_file() for n in names)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fetch_jars(
    cache_dir: Path = DEFAULT_CACHE_DIR,
    version: str = KAFKA_VERSION,
    *,
    progress: Callable[[str], None] | None = None,
    timeout_s: float = 900.0,
) -> Path:
    """Make sure ``<cache_dir>/<version>/libs`` holds the broker's classpath; return it.

    Reuses a completed folder; otherwise writes a throwaway POM and runs
    Maven's ``copy-dependencies`` into a scratch folder that is renamed into
    place only when Maven succeeded, then writes the completion marker.
    Concurrent callers on the same cache wait for each other (file lock).
    """
    say = progress or (lambda _msg: None)
    home = Path(cache_dir) / version
    libs = home / "libs"
    if jars_ready(libs):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise FetchError("mvn not found on PATH: install Maven (Debian package `maven`)")
    with _locked(home / ".lock"):
        if jars_ready(libs):  # another process finished it while we waited
            return libs
        pom = home / "pom.xml"
        pom.write_text(_POM.format(kafka=version, log4j=LOG4J_VERSION))
        scratch = home / "libs.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        cmd = [
            mvn,
            "-B",
            "-q",
            "-f",
            str(pom),
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={scratch}",
        ]
        say(f"fetching Kafka {version} jars with Maven into {libs}")
        started = time.monotonic()
        output = _run_with_ticker(cmd, timeout_s, say, "still fetching jars")
        if output.returncode != 0 or not scratch.is_dir():
            tail = "\n".join(output.stdout.splitlines()[-20:])
            raise FetchError(
                f"Maven could not fetch org.apache.kafka:kafka_2.13:{version} "
                f"(exit {output.returncode}); its output ends with:\n{tail}"
            )
        jars = sorted(p.name for p in scratch.glob("*.jar"))
        if not any(n.startswith(f"kafka_2.13-{version}") for n in jars):
            raise FetchError(f"Maven finished but kafka_2.13-{version}.jar is not in {scratch}")
        shutil.rmtree(libs, ignore_errors=True)
        scratch.rename(libs)
        (libs / _MARKER).write_text(
            json.dumps({"kafka": version, "log4j": LOG4J_VERSION, "jars": jars}, indent=1)
        )
        say(f"fetched {len(jars)} jars in {time.monotonic() - started:.1f} s")
    return libs


def _run_with_ticker(
    cmd: list[str], timeout_s: float, say: Callable[[str], None], what: str
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` capturing output; report every 10 s that it is still going."""
    done = threading.Event()
    started = time.monotonic()

    def tick() -> None:
        while not done.wait(10.0):
            say(f"{what} ({time.monotonic() - started:.0f} s)")

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        return subprocess.run(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise FetchError(f"{cmd[0]} did not finish within {timeout_s:.0f} s") from exc
    finally:
        done.set()


# ------------------------------------------------------------------------ broker


class LocalBrokerConfig(BaseModel):
    """How to run the local broker; ports 0 mean "pick free ones at start"."""

    #: Folder with the broker's jars (``fetch_jars`` returns it).
    jar_dir: Path
    #: Folder for server.properties, the broker log, data and the state file.
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = Field(9092, ge=0, le=65535)
    controller_port: int = Field(9093, ge=0, le=65535)
    #: Maximum JVM heap in MiB; modest, machines running tests are small.
    heap_mb: int = Field(768, ge=128, le=16384)
    ready_timeout_s: float = Field(90.0, gt=0)
    stop_timeout_s: float = Field(30.0, gt=0)
    java: str = "java"
    #: Cluster membership (see :mod:`voipflow.cluster`); the defaults make a
    #: single node that is its own quorum.
    node_id: int = Field(1, ge=1)
    #: ``controller.quorum.voters``; empty means this node alone.
    voters: str = ""
    #: KRaft cluster id for empty storage; empty means a new random one.
    cluster_id: str = ""
    #: Replicas of Kafka's internal topics (offsets, transactions).
    internal_replication: int = Field(1, ge=1)
    #: Broker default ``min.insync.replicas`` (and of the internal topics).
    min_insync_replicas: int = Field(1, ge=1)
    #: Listen with SASL_SSL (TLS, SCRAM and PLAIN users) instead of PLAINTEXT.
    security: BrokerSecurity | None = None


@dataclass(frozen=True)
class BrokerState:
    """What a running local broker records in ``<state_dir>/broker.json``."""

    pid: int
    bootstrap: str
    controller: str
    version: str
    log_file: str
    started_at: float


def read_state(state_dir: Path) -> BrokerState | None:
    """The recorded state of the broker in ``state_dir``, if one was started there."""
    path = Path(state_dir) / STATE_FILE
    try:
        return BrokerState(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise BrokerError(f"unreadable broker state file {path}: {exc}") from exc


def _is_broker_process(pid: int) -> bool:
    """True if ``pid`` is alive, not a zombie, and runs ``kafka.Kafka``.

    The command line check keeps a stale state file from making us signal an
    unrelated process that reused the pid.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return False
    return b"kafka.Kafka" in cmdline


def running_state(state_dir: Path) -> BrokerState | None:
    """The state of the broker in ``state_dir`` if its process is still alive."""
    state = read_state(state_dir)
    if state is None or not _is_broker_process(state.pid):
        return None
    return state


#: Record of a local cluster of several nodes (:mod:`voipflow.cluster`), kept
#: here beside the single broker's so that finding the local Kafka needs one module.
CLUSTER_FILE = "cluster.json"


@dataclass(frozen=True)
class NodeState:
    node_id: int
    pid: int
    bootstrap: str
    controller: str
    state_dir: str
    log_file: str


@dataclass(frozen=True)
class ClusterState:
    """What ``<state_dir>/cluster.json`` records."""

    bootstrap: str
    version: str
    nodes: list[NodeState]
    started_at: float

    def alive(self) -> list[NodeState]:
        return [n for n in self.nodes if _is_broker_process(n.pid)]


def read_cluster(state_dir: Path) -> ClusterState | None:
    """The local cluster recorded in ``state_dir`` (:mod:`voipflow.cluster` writes it)."""
    path = Path(state_dir) / CLUSTER_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise BrokerError(f"unreadable cluster state file {path}: {exc}") from exc
    try:
        nodes = [NodeState(**n) for n in raw.pop("nodes")]
        return ClusterState(nodes=nodes, **raw)
    except (KeyError, TypeError) as exc:
        raise BrokerError(f"unreadable cluster state file {path}: {exc}") from exc


def resolve_bootstrap(kafka_config: KafkaConfig, data_dir: Path) -> str:
    """The bootstrap servers to use: the configured ones, else the local broker's.

    Raises :class:`BrokerNotRunning` when ``VOIPFLOW_KAFKA_BOOTSTRAP`` is empty
    and no local broker runs in ``<data_dir>/kafka``.
    """
    if kafka_config.bootstrap.strip():
        return kafka_config.bootstrap
    state_dir = Path(data_dir) / "kafka"
    cluster = read_cluster(state_dir)
    if cluster is not None and cluster.alive():
        return cluster.bootstrap
    state = running_state(state_dir)
    if state is None:
        raise BrokerNotRunning(
            f"VOIPFLOW_KAFKA_BOOTSTRAP is empty and no local broker runs in {state_dir}: "
            "set VOIPFLOW_KAFKA_BOOTSTRAP=host:port or run `voipflow kafka start`"
        )
    return state.bootstrap


def stop_recorded(state_dir: Path, timeout_s: float = 30.0) -> BrokerState | None:
    """Stop the broker recorded in ``state_dir`` (from any process); return its state.

    SIGTERM lets Kafka shut down cleanly; SIGKILL follows after ``timeout_s``.
    Returns None when nothing was running; a stale state file is removed.
    """
    state = read_state(state_dir)
    path = Path(state_dir) / STATE_FILE
    if state is None:
        return None
    if not _is_broker_process(state.pid):
        path.unlink(missing_ok=True)
        return None
    _terminate(state.pid, timeout_s, lambda: not _is_broker_process(state.pid))
    path.unlink(missing_ok=True)
    return state


def _terminate(pid: int, timeout_s: float, gone: Callable[[], bool]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if gone():
            return
        time.sleep(0.1)
    log.warning("broker did not stop within %.0f s, killing it", timeout_s, extra={"pid": pid})
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not gone():
        time.sleep(0.1)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, url-safe base64 without padding.

    Never one that starts with ``-`` (one in 64 would): the storage tool
    would read it as an option and refuse to format.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


_LOG4J2 = """\
# Written by voipflow: warnings only, plus the line that says the broker is up.
status = warn
shutdownHook = disable
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.raftserver.name = kafka.server.KafkaRaftServer
logger.raftserver.level = INFO
"""


class LocalBroker:
    """One Kafka node (broker and controller) on ``host``; ``start()``/``stop()``.

    The constructor does no I/O. ``start()`` picks free ports where the config
    says 0, writes server.properties, formats storage (kept across restarts of
    the same ``state_dir``), launches the JVM in its own session (so it outlives
    a detaching parent and a terminal's Ctrl-C goes to us, not to it) and
    returns once the port answers and the log says the server started.
    """

    name = "kafka-broker"

    def __init__(self, config: LocalBrokerConfig, version: str = KAFKA_VERSION) -> None:
        self.config = config
        self.version = version
        self.state_dir = Path(config.state_dir)
        self.log_file = self.state_dir / "broker.log"
        self.port = config.port
        self.controller_port = config.controller_port
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = time.monotonic()
        self._log_offset = 0
        self.ready_after_s: float | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.config.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    # -- start --------------------------------------------------------------

    def start(self, progress: Callable[[str], None] | None = None) -> None:
        say = progress or (lambda _msg: None)
        cfg = self.config
        if not jars_ready(Path(cfg.jar_dir)):
            raise BrokerStartError(
                f"no Kafka jars in {cfg.jar_dir}: run `voipflow kafka fetch` first"
            )
        java = shutil.which(cfg.java)
        if java is None:
            raise BrokerStartError(f"{cfg.java} not found on PATH: install a Java 17+ runtime")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        running = running_state(self.state_dir)
        if running is not None:
            raise BrokerStartError(
                f"a broker already runs from {self.state_dir} at {running.bootstrap} "
                f"(pid {running.pid}): `voipflow kafka stop` first"
            )
        self._pick_ports()
        self.launch()
        try:
            self.wait_ready(say)
        except BaseException:
            self.stop()
            raise

    def launch(self) -> None:
        """Format storage if needed and start the JVM; do not wait (a cluster starts
        every node before any of them can be ready)."""
        cfg = self.config
        java = shutil.which(cfg.java) or cfg.java
        self.state_dir.mkdir(parents=True, exist_ok=True)
        props = self._write_config()
        classpath = f"{cfg.jar_dir}/*"
        log4j = f"-Dlog4j2.configurationFile={self.state_dir / 'log4j2.properties'}"
        self._format(java, classpath, log4j, props)

        xms = min(256, cfg.heap_mb)
        cmd = [
            java,
            f"-Xms{xms}m",
            f"-Xmx{cfg.heap_mb}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            log4j,
            "-cp",
            classpath,
            "kafka.Kafka",
            str(props),
        ]
        self._started = time.monotonic()
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.log_file, "ab") as out:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                start_new_session=True,
            )
        self._write_state(started_at=time.time())

    def wait_ready(self, progress: Callable[[str], None] | None = None) -> None:
        """Return once the launched node answers and says it started."""
        say = progress or (lambda _msg: None)
        started = self._started
        self._wait_ready(started, say)
        self.ready_after_s = time.monotonic() - started
        log.info(
            "kafka broker ready",
            extra={"bootstrap": self.bootstrap, "version": self.version, "pid": self.pid},
        )

    def _pick_ports(self) -> None:
        host = self.config.host
        if self.port == 0:
            self.port = free_port("tcp", host)
        if self.controller_port == 0:
            self.controller_port = free_port("tcp", host)
            while self.controller_port == self.port:
                self.controller_port = free_port("tcp", host)
        for what, port in (("--port", self.port), ("--controller-port", self.controller_port)):
            if not _port_free(host, port):
                raise BrokerStartError(
                    f"{host}:{port} is already in use: choose another {what} (0 picks a free one)"
                )

    def _write_config(self) -> Path:
        cfg = self.config
        host = cfg.host
        data = self.state_dir / "data"
        listener = "SASL_SSL" if cfg.security is not None else "PLAINTEXT"
        lines = {
            "process.roles": "broker,controller",
            "node.id": str(cfg.node_id),
            "controller.quorum.voters": cfg.voters
            or f"{cfg.node_id}@{host}:{self.controller_port}",
            "listeners": f"{listener}://{host}:{self.port},CONTROLLER://{host}:{self.controller_port}",
            "advertised.listeners": f"{listener}://{host}:{self.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "1",
            # Internal topics have as many replicas as the cluster has nodes (one
            # by default); one partition for offsets and transactions makes the
            # first group join fast on 2 cores.
            "offsets.topic.replication.factor": str(cfg.internal_replication),
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": str(cfg.internal_replication),
            "transaction.state.log.min.isr": str(cfg.min_insync_replicas),
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": str(cfg.internal_replication),
            "share.coordinator.state.topic.min.isr": str(cfg.min_insync_replicas),
            "min.insync.replicas": str(cfg.min_insync_replicas),
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "log.retention.hours": "24",
        }
        if cfg.security is not None:
            lines.update(listener_properties(cfg.security, host, self.port))
        props = self.state_dir / "server.properties"
        props.touch(mode=0o600)  # a secure broker's file holds its users' passwords
        props.write_text(
            "# Written by voipflow for a local single-node broker.\n"
            + "".join(f"{k}={v}\n" for k, v in lines.items())
        )
        (self.state_dir / "log4j2.properties").write_text(_LOG4J2)
        return props

    def _cluster_id(self) -> str:
        """The id storage was formatted with, or a new one for empty storage."""
        meta = self.state_dir / "data" / "meta.properties"
        if meta.is_file():
            for line in meta.read_text().splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "cluster.id" and value.strip():
                    return value.strip()
        return self.config.cluster_id or cluster_id()

    def _format(self, java: str, classpath: str, log4j: str, props: Path) -> None:
        cmd = [java, "-Xmx256m", log4j, "-cp", classpath, "kafka.tools.StorageTool"]
        # "--cluster-id=X", not "-t X": a random id may start with "-", which
        # argparse would take for an option.
        cmd += ["format", f"--cluster-id={self._cluster_id()}", "-c", str(props)]
        cmd += ["--ignore-formatted"]
        if self.config.security is not None:
            cmd += scram_format_args(self.config.security)
        try:
            res = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=120,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerStartError("formatting Kafka storage took more than 120 s") from exc
        if res.returncode != 0:
            tail = "\n".join(res.stdout.splitlines()[-15:])
            raise BrokerStartError(f"formatting Kafka storage failed:\n{tail}")

    def _wait_ready(self, started: float, say: Callable[[str], None]) -> None:
        assert self._proc is not None
        budget = self.config.ready_timeout_s
        next_note = started + 5.0
        seen_port = False
        while True:
            now = time.monotonic()
            rc = self._proc.poll()
            if rc is not None:
                raise BrokerStartError(
                    f"Kafka exited with status {rc} while starting; {self.log_file} ends with:\n"
                    + tail(self.log_file, 25)
                )
            seen_port = seen_port or _port_answers(self.config.host, self.port)
            if seen_port and self._log_says_ready():
                return
            if now - started > budget:
                raise BrokerStartError(
                    f"Kafka was not ready on {self.bootstrap} within {budget:.0f} s; "
                    f"{self.log_file} ends with:\n" + tail(self.log_file, 25)
                )
            if now >= next_note:
                say(f"waiting for the broker on {self.bootstrap} ({now - started:.0f} s)")
                next_note = now + 5.0
            time.sleep(0.1)

    def _log_says_ready(self) -> bool:
        # Only this run's part of the log counts: it is appended across restarts.
        try:
            with open(self.log_file, "rb") as fh:
                fh.seek(self._log_offset)
                chunk = fh.read()
        except OSError:
            return False
        return READY_LINE.encode() in chunk

    def _write_state(self, started_at: float) -> None:
        assert self._proc is not None
        state = BrokerState(
            pid=self._proc.pid,
            bootstrap=self.bootstrap,
            controller=f"{self.config.host}:{self.controller_port}",
            version=self.version,
            log_file=str(self.log_file),
            started_at=started_at,
        )
        tmp = self.state_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=1))
        tmp.replace(self.state_dir / STATE_FILE)

    # -- stop ---------------------------------------------------------------

    def wait(self) -> int:
        """Block until the broker process exits; return its status."""
        if self._proc is None:
            return 0
        return self._proc.wait()

    def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _terminate(proc.pid, self.config.stop_timeout_s, lambda: proc.poll() is not None)
        proc.wait()
        state = read_state(self.state_dir)
        if state is not None and state.pid == proc.pid:
            (self.state_dir / STATE_FILE).unlink(missing_ok=True)
        self._proc = None
