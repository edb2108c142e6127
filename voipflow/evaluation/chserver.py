"""A throw-away ClickHouse server process (Debian's clickhouse-server 18.16).

For the test session (``tests/fixtures/clickhouse_server.py``) and the sink
benchmark. The server runs from a generated minimal config in a given
directory, on free loopback ports, so it neither needs nor touches a system
service. Outage tests call :meth:`ClickHouseServer.stop` and
:meth:`ClickHouseServer.start`; the data directory survives, as on a real
restart. 18.16 predates LowCardinality, IPv6, TTL and codecs: callers give it
simple MergeTree tables in the old syntax.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from voipflow.netutil import free_port

SERVER_BINARIES = ("/usr/bin/clickhouse-server", "/usr/sbin/clickhouse-server")

_CONFIG = """<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>{dir}/server.log</log>
    <errorlog>{dir}/server.err.log</errorlog>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>{tcp_port}</tcp_port>
  <http_port>{http_port}</http_port>
  <path>{dir}/data/</path>
  <tmp_path>{dir}/tmp/</tmp_path>
  <user_files_path>{dir}/user_files/</user_files_path>
  <format_schema_path>{dir}/format_schemas/</format_schema_path>
  <mark_cache_size>104857600</mark_cache_size>
  <max_concurrent_queries>20</max_concurrent_queries>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
</yandex>
"""

_USERS = """<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas><default></default></quotas>
</yandex>
"""


def server_binary() -> str | None:
    """The clickhouse-server binary, or None when it is not installed."""
    for path in SERVER_BINARIES:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("clickhouse-server")


class ClickHouseServer:
    """One clickhouse-server process in ``directory`` on a free port."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.dir = directory
        self.tcp_port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        (directory / "config.xml").write_text(
            _CONFIG.format(dir=directory, tcp_port=self.tcp_port, http_port=self.http_port)
        )
        (directory / "users.xml").write_text(_USERS)

    @property
    def url(self) -> str:
        return f"clickhouse://default@127.0.0.1:{self.tcp_port}/default"

    def url_for(self, database: str) -> str:
        return f"clickhouse://default@127.0.0.1:{self.tcp_port}/{database}"

    def start(self, timeout_s: float = 60.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        out = open(self.dir / "stdout.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [self.binary, f"--config-file={self.dir / 'config.xml'}"],
            cwd=self.dir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"clickhouse-server exited with {self.proc.returncode}: "
                    + (self.dir / "server.err.log").read_text(errors="replace")[-2000:]
                )
            if self._answers():
                return
            time.sleep(0.2)
        raise RuntimeError(f"clickhouse-server did not answer on {self.tcp_port} in {timeout_s}s")

    def _answers(self) -> bool:
        from clickhouse_driver import Client

        client = Client("127.0.0.1", port=self.tcp_port, connect_timeout=1)
        try:
            client.execute("SELECT 1")
            return True
        except Exception:
            return False
        finally:
            client.disconnect()

    def stop(self, timeout_s: float = 30.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
