"""Prebuilt statements run through the database driver's cursor, inside SQLAlchemy's transaction.

Why: `Connection.execute` of an already-built Core statement still costs ~25 µs of Python per
call on this machine kind (cache-key lookup, parameter construction, execution context, result
object), five times what SQLite needs to run a primary-key lookup, and an inbound message runs a
dozen statements. `Prepared` compiles a statement once per dialect and set of parameter names
with SQLAlchemy itself, keeps its bind and result processors (so `UtcDateTime` and booleans come
back exactly as through `Connection.execute`), and then runs it with one cursor call
(docs/performance.md).

What it keeps from SQLAlchemy: the SQL text, parameter order and style, scalar column defaults,
the type processors, how a new primary key comes back (`lastrowid` or `RETURNING`), and the
exception classes (`sqlalchemy.exc.IntegrityError` and friends, which the retry logic catches).
The statement runs on the connection's DBAPI connection, so it belongs to whatever transaction or
savepoint the SQLAlchemy `Connection` has open; call it inside one (every unit of work is).
Statements with expanding (`IN`) parameters or Python-callable defaults are refused when
compiled: run those through `Connection.execute`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import BindParameter, Connection, bindparam
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.dml import Insert, Update
from sqlalchemy.sql.expression import ClauseElement, Select

Row = dict[str, Any]
Processor = Callable[[Any], Any] | None
R = TypeVar("R")


@dataclass(frozen=True)
class _Compiled:
    sql: str
    positional: bool
    names: tuple[str, ...]  # parameter names, in SQL order
    processed: tuple[tuple[int, Callable[[Any], Any]], ...]  # (position in `names`, bind processor)
    defaults: Mapping[str, Any]  # anonymous literals and scalar column defaults
    columns: tuple[str, ...]  # result column names
    results: tuple[Processor, ...]  # result processors, one per column
    returns_id: bool  # an INSERT whose new primary key comes back as a row (RETURNING)
    processed_results: tuple[tuple[int, Callable[[Any], Any]], ...] = ()  # (column position, processor)

    def values(self, row: Sequence[Any]) -> list[Any]:
        """A result row's values, in column order, as SQLAlchemy would give them."""
        values = list(row)
        for position, process in self.processed_results:
            values[position] = process(values[position])
        return values

    def args(self, params: Mapping[str, Any]) -> Any:
        """The driver's parameters: processed values in SQL order, or by name."""
        values = {**self.defaults, **params} if self.defaults else params
        try:
            ordered = [values[name] for name in self.names]
        except KeyError as exc:
            raise TypeError(f"missing the parameter {exc.args[0]!r} for: {self.sql}") from None
        for position, process in self.processed:
            ordered[position] = process(ordered[position])
        return tuple(ordered) if self.positional else dict(zip(self.names, ordered, strict=True))


class Prepared:
    """One prebuilt statement. `Prepared(select(t).where(t.c.id == bindparam("w_id")))` at
    import; `.first(conn, {"w_id": 1})` per call."""

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._compiled: dict[tuple[str, tuple[str, ...]], _Compiled] = {}

    # ------------------------------------------------------------------------------ running

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[Row]:
        compiled, cursor = self._run(conn, params)
        names = compiled.columns
        try:
            fetched = cursor.fetchall()
        finally:
            cursor.close()
        if not compiled.processed_results:
            return [dict(zip(names, row, strict=True)) for row in fetched]
        return [dict(zip(names, compiled.values(row), strict=True)) for row in fetched]

    def first(self, conn: Connection, params: Mapping[str, Any]) -> Row | None:
        compiled, row = self._one(conn, params)
        if row is None:
            return None
        return dict(zip(compiled.columns, compiled.values(row), strict=True))

    def records(self, conn: Connection, params: Mapping[str, Any], reader: Callable[[Sequence[Any]], R]) -> list[R]:
        """The rows, each made into a record by `reader` from its values in column order."""
        compiled, cursor = self._run(conn, params)
        try:
            fetched = cursor.fetchall()
        finally:
            cursor.close()
        if not compiled.processed_results:
            return [reader(row) for row in fetched]
        return [reader(compiled.values(row)) for row in fetched]

    def record(self, conn: Connection, params: Mapping[str, Any], reader: Callable[[Sequence[Any]], R]) -> R | None:
        """The first row made into a record by `reader`, or None."""
        compiled, row = self._one(conn, params)
        if row is None:
            return None
        return reader(compiled.values(row))

    def scalar(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """The first column of the first row, or None."""
        compiled, row = self._one(conn, params)
        if row is None:
            return None
        proc = compiled.results[0] if compiled.results else None  # an INSERT ... RETURNING has none
        return proc(row[0]) if proc is not None else row[0]

    def _one(self, conn: Connection, params: Mapping[str, Any]) -> tuple[_Compiled, Any]:
        compiled, cursor = self._run(conn, params)
        try:
            return compiled, cursor.fetchone()
        finally:
            cursor.close()

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Run a statement that returns no rows; the number of rows it changed."""
        _, cursor = self._run(conn, params)
        count: int = cursor.rowcount
        cursor.close()
        return count

    def insert(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Run an INSERT of one row; its new primary key."""
        compiled, cursor = self._run(conn, params)
        try:
            new_id = cursor.fetchone()[0] if compiled.returns_id else cursor.lastrowid
        finally:
            cursor.close()
        return int(new_id)

    def executemany(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
        """Run an INSERT or UPDATE once per row, in one driver call; every row has the same keys.
        Returns the number of rows it changed, summed over the rows (both drivers sum it).
        (`Connection.execute(statement, rows)` builds SQLAlchemy's parameters for every row,
        ~10 µs a row here, more than the database needs to write it.)"""
        if not rows:
            return 0
        compiled = self._compiled_for(conn, tuple(rows[0]))
        cursor = self._call(conn, compiled, "executemany", [compiled.args(row) for row in rows])
        count: int = cursor.rowcount
        cursor.close()
        return count

    def _run(self, conn: Connection, params: Mapping[str, Any]) -> tuple[_Compiled, Any]:
        compiled = self._compiled_for(conn, tuple(params))
        return compiled, self._call(conn, compiled, "execute", compiled.args(params))

    def _compiled_for(self, conn: Connection, keys: tuple[str, ...]) -> _Compiled:
        key = (conn.dialect.name, keys)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = _compile(self.statement, conn.dialect, keys)
        return compiled

    @staticmethod
    def _call(conn: Connection, compiled: _Compiled, method: str, args: Any) -> Any:
        dialect = conn.dialect
        cursor = _cursor(conn)
        try:
            getattr(cursor, method)(compiled.sql, args)
        except dialect.loaded_dbapi.Error as exc:
            cursor.close()
            raise DBAPIError.instance(compiled.sql, args, exc, dialect.loaded_dbapi.Error,
                                      hide_parameters=conn.engine.hide_parameters, dialect=dialect) from exc
        return cursor


def _compile(statement: ClauseElement, dialect: Dialect, keys: tuple[str, ...]) -> _Compiled:
    is_dml = isinstance(statement, Insert | Update)
    compiled: Any = statement.compile(dialect=dialect, column_keys=list(keys) if is_dml else None)
    if compiled.has_out_parameters or any(b.expanding for b in compiled.binds.values()):
        raise TypeError("Prepared cannot run statements with expanding or out parameters")
    defaults: dict[str, Any] = {name: bind.value for bind, name in compiled.bind_names.items()
                                if name not in keys and bind.value is not None}
    for column in [*compiled.insert_prefetch, *compiled.update_prefetch]:
        default = column.default if column in compiled.insert_prefetch else column.onupdate
        if default is None or not default.is_scalar:
            raise TypeError(f"Prepared cannot compute the default of {column}")
        defaults[column.key] = default.arg
    processors = compiled._bind_processors
    positional = compiled.positiontup is not None
    names = compiled.positiontup if positional else list(dict.fromkeys(compiled.bind_names.values()))
    selected = list(statement.selected_columns) if isinstance(statement, Select) else []
    columns = tuple(col.name for col in selected)
    results = tuple(col.type._cached_result_processor(dialect, None) for col in selected)
    return _Compiled(
        sql=compiled.string, positional=positional,
        names=tuple(names),
        processed=tuple((i, processors[name]) for i, name in enumerate(names) if processors.get(name) is not None),
        defaults=defaults, columns=columns, results=results,
        returns_id=bool(getattr(compiled, "effective_returning", None)),
        processed_results=tuple((i, proc) for i, proc in enumerate(results) if proc is not None),
    )


def bind_list(name: str, count: int) -> list[BindParameter[Any]]:
    """`count` bound parameters `name_0`, `name_1`, ... for an `IN (...)` of a fixed length, which
    `Prepared` can run (an expanding parameter it cannot); build one statement per length."""
    return [bindparam(f"{name}_{i}") for i in range(count)]


READ_AHEAD_CHUNK = 128  # keys per statement of a unit of work's read-ahead (a batch's senders)


def in_chunks(values: Iterable[Any], most: int = 256) -> Iterator[list[Any]]:
    """The distinct `values` in slices of at most `most`, each padded to a power of two by
    repeating its last value (which an IN ignores): only a few statement lengths are compiled,
    and they stay in the driver's statement cache."""
    distinct = list(dict.fromkeys(values))
    for first in range(0, len(distinct), most):
        part = distinct[first:first + most]
        size = 1 << (len(part) - 1).bit_length()
        yield part + [part[-1]] * (size - len(part))


def bind_values(name: str, values: Sequence[Any]) -> dict[str, Any]:
    """The parameters of `bind_list(name, len(values))`."""
    return {f"{name}_{i}": value for i, value in enumerate(values)}


_DEPTH = "optflow_savepoint_depth"  # in `Connection.info`: savepoints open on the connection


def forget_savepoints(conn: Connection) -> None:
    """A new transaction has no savepoints (one a failed transaction left open ended with it)."""
    conn.info.pop(_DEPTH, None)


def _cursor(conn: Connection) -> Any:
    return conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]


def _driver_sql(conn: Connection, sql: str) -> None:
    dialect = conn.dialect
    cursor = _cursor(conn)
    try:
        cursor.execute(sql)
    except dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(sql, (), exc, dialect.loaded_dbapi.Error, dialect=dialect) from exc
    finally:
        cursor.close()


class Savepoint:
    """A SAVEPOINT in the connection's open transaction, run through the driver: SQLAlchemy's
    `begin_nested()` costs ~90 µs per savepoint here (it compiles the SAVEPOINT and RELEASE
    clauses every time), and the group commit opens one per inbound message. The same SQL on
    SQLite and PostgreSQL. `with Savepoint(conn):` releases on success and rolls back on error.

    Savepoints nest (a command's inside the batch's transaction, its events' inside it): each
    is named after its depth, so the few statements are the same text every time and the
    driver's statement cache keeps them prepared. (Named uniquely, every SAVEPOINT and RELEASE
    was a new statement to parse, and they pushed the hot statements out of that cache.) Both
    databases release and roll back to the newest savepoint of a name."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.name = ""
        self.is_active = False

    def begin(self) -> Savepoint:
        depth = self.conn.info.get(_DEPTH, 0) + 1
        self.name = f"optflow_sp_{depth}"
        _driver_sql(self.conn, f"SAVEPOINT {self.name}")
        self.conn.info[_DEPTH] = depth
        self.is_active = True
        return self

    def commit(self) -> None:
        """Keep what was done since `begin` (it becomes durable with the outer transaction)."""
        self._close()
        _driver_sql(self.conn, f"RELEASE SAVEPOINT {self.name}")

    def rollback(self) -> None:
        """Undo what was done since `begin`; the outer transaction goes on."""
        self._close()
        _driver_sql(self.conn, f"ROLLBACK TO SAVEPOINT {self.name}")
        _driver_sql(self.conn, f"RELEASE SAVEPOINT {self.name}")

    def _close(self) -> None:
        self.is_active = False
        self.conn.info[_DEPTH] = max(self.conn.info.get(_DEPTH, 1) - 1, 0)

    def __enter__(self) -> Savepoint:
        return self.begin()

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if not self.is_active:
            return
        if exc_type is None:
            self.commit()
        else:
            self.rollback()
