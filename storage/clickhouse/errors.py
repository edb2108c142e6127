"""ClickHouse errors, translated from chdb and clickhouse-driver at the boundary.

Callers decide what to do from the class alone: a :class:`TransientError` may
succeed if the same statement is sent again later (the sink pauses and retries
with backoff); a :class:`PermanentError` never will (the sink stops with the
message). ``code`` keeps ClickHouse's numeric error code when there is one.

Errors::

    ClickHouseError
     +-- TransientError        retry later, with backoff
     |    +-- ConnectionLost   server unreachable, connection refused/reset, timeout
     |    +-- ServerBusy       too many parts or queries, memory limit, replica read-only
     |    +-- DiskFull         chdb's data directory has no room for the insert
     +-- PermanentError        retrying cannot help; fix data, schema or settings
          +-- SchemaError      unknown table/column/database, type mismatch
          +-- QueryError       syntax error, unknown setting, any other refused query
          +-- AccessError      authentication or authorisation failed
          +-- ConfigError      bad URL, chdb data directory unusable
"""

from __future__ import annotations

import re

_SQL_SHOWN = 300


class ClickHouseError(Exception):
    """Base class; ``code`` is ClickHouse's error code (``None`` if not from the server)."""

    def __init__(self, message: str, *, code: int | None = None, sql: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.sql = sql[:_SQL_SHOWN]

    @property
    def transient(self) -> bool:
        return isinstance(self, TransientError)


class TransientError(ClickHouseError):
    """The statement may succeed later: retry with backoff."""


class ConnectionLost(TransientError):
    """The server could not be reached or the connection broke mid-statement."""


class ServerBusy(TransientError):
    """The server refused the statement for now (load, parts, memory)."""


class DiskFull(TransientError):
    """The embedded engine's disk is (nearly) full.

    chdb 3 returns from an insert on a full disk without an error and the rows
    are gone (measured: five inserts "succeeded" on a full tmpfs, the table
    kept none of them), so the embedded backend checks the free space first
    and refuses the insert, which the sink retries once space is back.
    """


class PermanentError(ClickHouseError):
    """The statement will never succeed as it is."""


class SchemaError(PermanentError):
    """The data or statement does not match the tables (unknown name, wrong type)."""


class QueryError(PermanentError):
    """The statement itself is wrong (syntax, unknown setting, unsupported)."""


class AccessError(PermanentError):
    """Authentication or authorisation failed."""


class ConfigError(PermanentError):
    """The connection settings cannot work (bad URL, unusable data directory)."""


# ClickHouse error codes (src/Common/ErrorCodes.cpp) grouped by what a caller
# should do. Codes not listed are permanent: retrying an unknown failure
# forever would hide it, stopping shows it.
_CONNECTION_CODES = frozenset(
    {
        3,  # UNEXPECTED_END_OF_FILE
        32,  # ATTEMPT_TO_READ_AFTER_EOF
        159,  # TIMEOUT_EXCEEDED
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        279,  # ALL_CONNECTION_TRIES_FAILED
        319,  # UNKNOWN_STATUS_OF_INSERT
        1000,  # POCO_EXCEPTION (connection reset and friends)
    }
)
_BUSY_CODES = frozenset(
    {
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        203,  # NO_FREE_CONNECTION
        225,  # NO_ZOOKEEPER
        236,  # ABORTED
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY (replica lost its coordination session)
        252,  # TOO_MANY_PARTS
        394,  # QUERY_WAS_CANCELLED
        999,  # KEEPER_EXCEPTION
    }
)
_SCHEMA_CODES = frozenset(
    {
        8,  # THERE_IS_NO_COLUMN
        10,  # NOT_FOUND_COLUMN_IN_BLOCK
        16,  # NO_SUCH_COLUMN_IN_TABLE
        20,  # NUMBER_OF_COLUMNS_DOESNT_MATCH
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        47,  # UNKNOWN_IDENTIFIER
        49,  # LOGICAL_ERROR raised for block structure mismatches on insert
        53,  # TYPE_MISMATCH
        57,  # TABLE_ALREADY_EXISTS
        60,  # UNKNOWN_TABLE
        70,  # CANNOT_CONVERT_TYPE
        81,  # UNKNOWN_DATABASE
        117,  # INCORRECT_DATA
        122,  # INCOMPATIBLE_COLUMNS
        171,  # BLOCKS_HAVE_DIFFERENT_STRUCTURE
    }
)
_ACCESS_CODES = frozenset({192, 193, 194, 195, 497, 516})  # users, passwords, grants

_CODE_RE = re.compile(r"Code:\s*(\d+)")


def code_of(message: str) -> int | None:
    """The ClickHouse error code in an exception text (``Code: 60. DB::...``)."""
    m = _CODE_RE.search(message)
    return int(m.group(1)) if m else None


def classify(code: int | None, message: str, sql: str = "") -> ClickHouseError:
    """The exception for a server error ``code`` with ``message``."""
    first_line = message.strip().splitlines()[0] if message.strip() else message
    # Server messages end in a long stack trace on old servers: keep the line
    # a person needs.
    first_line = first_line.split(" Stack trace:")[0]
    cls: type[ClickHouseError]
    if code in _CONNECTION_CODES:
        cls = ConnectionLost
    elif code in _BUSY_CODES:
        cls = ServerBusy
    elif code in _SCHEMA_CODES:
        cls = SchemaError
    elif code in _ACCESS_CODES:
        cls = AccessError
    else:
        cls = QueryError
    return cls(first_line, code=code, sql=sql)
