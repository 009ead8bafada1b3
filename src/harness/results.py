"""Result rows: one per (conversation, turn, provider), a fixed column set, saved by extension."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import math
import operator
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .messages import FINISH_REASONS, Reply, Usage
from .tools import calls_json, from_json, tool_call_match


@dataclass
class TurnResult:
    """What one provider answered at one turn of one conversation."""

    conversation_id: str
    turn: int
    provider: str
    model: str | None = None
    prompt: str = ""
    reference: str | None = None
    response: str | None = None
    finish_reason: str | None = None
    raw_finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_input_tokens: int | None = None
    reasoning_tokens: int | None = None
    billed_input_tokens: int | None = None
    billed_output_tokens: int | None = None
    usage_raw: str | None = None  # the provider's own usage object, JSON text
    latency_ms: float | None = None
    # latency (harness.timings): e2e = latency_ms; the rest from a stream's stamps
    e2e_ms: float | None = None
    ttfb_ms: float | None = None
    ttft_ms: float | None = None
    ttfc_ms: float | None = None
    itl_ms: float | None = None
    output_tokens_per_s: float | None = None
    status: str = "ok"          # ok | error | skipped
    http_status: int | None = None
    error: str | None = None
    attempts: int = 0
    response_id: str | None = None
    tool_calls: str | None = None  # JSON text of the normalized tool calls, if any
    reference_tool_calls: str | None = None  # the dataset's next assistant tool calls, JSON
    tool_call_match: bool | None = None  # tool_calls == reference_tool_calls (see harness.tools)
    cost_usd: float | None = None  # filled in by harness.costs

    @classmethod
    def from_reply(cls, reply: Reply, **row) -> TurnResult:
        usage = reply.usage
        tool_calls = calls_json(reply.tool_calls)
        if row.get("reference_tool_calls"):
            row["tool_call_match"] = tool_call_match(reply.tool_calls,
                                                     from_json(row["reference_tool_calls"]))
        return cls(
            **row,
            model=reply.model,
            response=reply.text,
            finish_reason=reply.finish_reason,
            raw_finish_reason=reply.raw_finish_reason,
            **vars(usage),
            response_id=reply.response_id,
            tool_calls=tool_calls,
            error=reply.error,
            status="error" if reply.finish_reason == "error" else "ok",
        )


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(TurnResult))
TIMING_COLUMNS = ("e2e_ms", "ttfb_ms", "ttft_ms", "ttfc_ms", "itl_ms", "output_tokens_per_s")
TOKEN_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Usage) if f.name != "usage_raw")
STATUSES: tuple[str, ...] = ("ok", "error", "skipped")
# ordered categoricals: provider in the run's order; the others a fixed vocabulary, in this
# order, then any value outside it (sorted), kept rather than lost (a newer harness's reason)
VOCABULARIES: dict[str, tuple[str, ...]] = {"finish_reason": FINISH_REASONS, "status": STATUSES}
CATEGORICAL = ("provider", "finish_reason", "status")
DTYPES: dict[str, str] = {
    **{c: "string" for c in COLUMNS},
    **{c: "category" for c in CATEGORICAL},
    **{c: "Int64" for c in TOKEN_COLUMNS},
    "turn": "Int64",
    "http_status": "Int64",
    "attempts": "Int64",
    "latency_ms": "Float64",
    **{c: "Float64" for c in TIMING_COLUMNS},
    "tool_call_match": "boolean",
    "cost_usd": "Float64",
}
SORT_KEY = ["conversation_id", "turn", "provider"]
_ARROW = {"string": pa.string(), "category": pa.string(), "Int64": pa.int64(), "Float64": pa.float64(),
          "boolean": pa.bool_()}
_PANDAS = {pa.string(): pd.StringDtype(), pa.int64(): pd.Int64Dtype(),
           pa.float64(): pd.Float64Dtype(), pa.bool_(): pd.BooleanDtype()}


_VALUES = operator.itemgetter(*COLUMNS)
# the frame's Arrow memory from the C allocator, not pyarrow's default (mimalloc): building
# the 100k-row frame of an offline replay took 0.55 s through mimalloc, 0.21 s through malloc
_POOL = pa.system_memory_pool()


_SCHEMA = pa.schema([(c, _ARROW[DTYPES[c]]) for c in COLUMNS])


def _batch(columns: list[list[Any]]) -> pa.RecordBatch | None:
    """Columns of values as one Arrow batch of the result types; None when a value is not of
    its column's type (e.g. "12" in an Int64 column), for pandas to infer."""
    try:  # column by column: values of the right types need no inference
        return pa.record_batch([pa.array(values, field.type, memory_pool=_POOL)
                                for values, field in zip(columns, _SCHEMA, strict=True)],
                               schema=_SCHEMA)
    except (pa.ArrowException, TypeError, ValueError):
        return None


class ResultColumns:
    """Rows kept as one list per column, each row's values taken as it is added, and every
    `BATCH` rows made one Arrow batch.

    A run's rows are read here while they are fresh in memory, not all at the end when they
    lie cold and scattered over the heap: at 100k turns that transposition took 0.85 s,
    ~5% of an offline replay, and the rows' dicts are not held until the end either. Each
    batch is made while its values are still in the CPU's cache, and their Python objects
    go then: at 100k turns ~0.1 s faster than one conversion at the end, the peak 126 MB lower.
    """

    BATCH = 4096

    def __init__(self) -> None:
        self.columns: list[list[Any]] = [[] for _ in COLUMNS]
        self.batches: list[pa.RecordBatch] = []
        self._typed = True  # False once a value would not take its column's type
        self._drain: collections.deque = collections.deque(maxlen=0)

    def append(self, result: TurnResult) -> None:
        # the appends run in C (a loop over the columns in Python costs 1.6x as much)
        self._drain.extend(map(list.append, self.columns, _VALUES(vars(result))))
        if self._typed and len(self.columns[0]) >= self.BATCH:
            batch = _batch(self.columns)
            if batch is None:
                self._typed = False
            else:
                self.batches.append(batch)
                self.columns = [[] for _ in COLUMNS]

    def __len__(self) -> int:
        return sum(b.num_rows for b in self.batches) + len(self.columns[0])


def to_frame(rows: Iterable[TurnResult | dict] | ResultColumns, order: list[str] | None = None,
             providers: list[str] | None = None) -> pd.DataFrame:
    """Rows as the results DataFrame: the documented columns and dtypes, in a stable order.

    `order` lists conversation ids in dataset order (without it rows sort by id); `providers`
    the run's providers, the order of the `provider` categories (without it: sorted by name).
    Rows sort by conversation, turn, then provider in that order.
    """
    batches: list[pa.RecordBatch] = []
    if isinstance(rows, ResultColumns):
        batches, columns = rows.batches, rows.columns
    else:
        records = [vars(r) if isinstance(r, TurnResult) else r for r in rows]  # no asdict copy
        # each row's dict is read once, into a tuple (rows lie scattered over the heap, each
        # visit a cache miss), then each column is taken from the tuples, which lie together:
        # 8,000 live rows 147 -> 45 ms, ~5x faster than transposing them with zip(*rows)
        try:
            values = list(map(_VALUES, records))
        except KeyError:  # a dict without every column
            values = [tuple(r.get(c) for c in COLUMNS) for r in records]
        columns = [list(map(operator.itemgetter(i), values)) for i in range(len(COLUMNS))]
    last = _batch(columns)
    if last is not None:
        table = pa.Table.from_batches([*batches, last], schema=_SCHEMA)
        frame = table.to_pandas(types_mapper=_PANDAS.get, memory_pool=_POOL)
    else:  # values of other types: pandas infers, and `normalize` coerces what it can
        head = pa.Table.from_batches(batches, schema=_SCHEMA).to_pydict()
        frame = pd.DataFrame({c: [*head[c], *columns[i]] for i, c in enumerate(COLUMNS)})
    frame = normalize(frame, providers)
    if order is not None:
        rank = {cid: i for i, cid in enumerate(order)}
        frame = frame.assign(_rank=frame["conversation_id"].map(rank))
        frame = frame.sort_values(["_rank", "turn", "provider"], kind="stable").drop(columns="_rank")
    else:
        frame = frame.sort_values(SORT_KEY, kind="stable")
    return frame.reset_index(drop=True)


# columns added after results files were first written: an older file reads with them NA
ADDED_COLUMNS = ("cache_write_input_tokens", "usage_raw", "reference_tool_calls", "tool_call_match",
                 *TIMING_COLUMNS)


def normalize(frame: pd.DataFrame, providers: list[str] | None = None) -> pd.DataFrame:
    """Coerce any frame with the result columns onto the documented columns and dtypes."""
    if "e2e_ms" not in frame.columns and "latency_ms" in frame.columns:  # the same measurement
        frame = frame.assign(e2e_ms=frame["latency_ms"])
    frame = frame.assign(**{c: None for c in ADDED_COLUMNS if c not in frame.columns})
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"not a results table: missing columns {', '.join(missing)}")
    # a copy: columns read from Parquet can be read-only views of Arrow's memory
    return apply_dtypes(frame[list(COLUMNS)].copy(), providers)


def apply_dtypes(frame: pd.DataFrame, providers: list[str] | None = None) -> pd.DataFrame:
    """`frame` with each of its result columns on the documented dtype (`DTYPES`); other
    columns (scores, ...) as they are. The same frame when nothing needed converting.

    `provider`, `finish_reason` and `status` become ordered categoricals (`categories`).
    Provider categories: `providers`, else the column's own when it is a categorical already,
    else the providers of the run in `frame.attrs["run"]`; then any other name, sorted.
    Plain strings (a CSV, a streamed Parquet row group) are fine input.
    """
    converted = {}
    for column in frame.columns:
        dtype = DTYPES.get(column)
        if dtype is None:
            continue
        values = frame[column]
        if dtype == "category":
            target = categories(column, values, providers if column == "provider" else None,
                                frame.attrs.get("run"))
            if values.dtype != target:
                converted[column] = _categorical(values, target)
        elif str(values.dtype) != dtype:
            converted[column] = pd.Series(_as_dtype(values, dtype), index=frame.index)
    return _replaced(frame, converted)


def categories(column: str, values: pd.Series, providers: list[str] | None = None,
               run: dict | None = None) -> pd.CategoricalDtype:
    """The ordered categorical dtype of `column` (`provider`, `finish_reason` or `status`)
    for `values`: every value they hold has a category, none is lost."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        seen = [str(v) for v in values.cat.categories]
    else:
        seen = [str(v) for v in pd.unique(values.dropna())]
    if column in VOCABULARIES:
        fixed = VOCABULARIES[column]
        names = [*fixed, *sorted(set(seen) - set(fixed))]
    else:
        if providers is None and isinstance(values.dtype, pd.CategoricalDtype):
            providers = seen
        elif providers is None and isinstance(run, dict):
            providers = [p["name"] for p in run.get("providers") or []
                         if isinstance(p, dict) and isinstance(p.get("name"), str)]
        names = list(dict.fromkeys([*(providers or []), *sorted(seen)]))
    return pd.CategoricalDtype(names, ordered=True)


def _categorical(values: pd.Series, dtype: pd.CategoricalDtype) -> pd.Series:
    if isinstance(values.dtype, pd.CategoricalDtype):
        if not all(isinstance(c, str) for c in values.cat.categories):
            values = values.cat.rename_categories([str(c) for c in values.cat.categories])
        return values.cat.set_categories(dtype.categories, ordered=True)
    if not pd.api.types.is_string_dtype(values.dtype):  # 42 read back from a CSV as a number
        values = pd.Series(_as_dtype(values, "string"), index=values.index)
    return pd.Series(pd.Categorical(values, dtype=dtype), index=values.index, name=values.name)


def unify(*frames: pd.DataFrame) -> list[pd.DataFrame]:
    """The frames with the same categories on each categorical column: the union of theirs
    (providers in order of first appearance), so they concatenate and merge without
    falling back to plain strings or `object`."""
    out = list(frames)
    for column in CATEGORICAL:
        holding = [f for f in out if column in f.columns]
        if not holding:
            continue
        names = list(dict.fromkeys(
            c for f in holding for c in categories(column, f[column], run=f.attrs.get("run")
                                                   ).categories))
        target = categories(column, pd.Series(names, dtype="string"), names)
        out = [_on_dtype(f, column, target) if column in f.columns else f for f in out]
    return out


def _on_dtype(frame: pd.DataFrame, column: str, dtype: pd.CategoricalDtype) -> pd.DataFrame:
    if frame[column].dtype == dtype:
        return frame
    return _replaced(frame, {column: _categorical(frame[column], dtype)})


def concat(frames: Iterable[pd.DataFrame], **kwargs: Any) -> pd.DataFrame:
    """Results frames (several runs, a run and its baseline) as one: `pd.concat` with each
    categorical column on the union of the runs' categories."""
    return pd.concat(unify(*frames), **kwargs)


def nullable(frame: pd.DataFrame) -> pd.DataFrame:
    """A derived table on the documented dtype set: integers `Int64`, other numbers
    `Float64`, flags `boolean`, text `string`; categoricals and nullable columns as they are."""
    converted = {}
    for column in frame.columns:
        values = frame[column]
        dtype = values.dtype
        if isinstance(dtype, pd.CategoricalDtype) or str(dtype) in NULLABLE:
            continue
        if pd.api.types.is_bool_dtype(dtype):
            converted[column] = values.astype("boolean")
        elif pd.api.types.is_integer_dtype(dtype):
            converted[column] = values.astype("Int64")
        elif pd.api.types.is_float_dtype(dtype):
            converted[column] = values.astype("Float64")
        elif pd.api.types.is_string_dtype(dtype) or pd.api.types.infer_dtype(values) in (
                "string", "empty"):
            converted[column] = pd.Series(_as_dtype(values, "string"), index=frame.index)
        else:  # mixed or numeric objects: whatever pandas makes of them, nullable
            converted[column] = values.convert_dtypes(convert_integer=False)
    return _replaced(frame, converted)


def providers(frame: pd.DataFrame) -> list[str]:
    """The providers `frame` has rows for, in the order of its `provider` categories (the
    run's order), else in order of appearance."""
    values = frame["provider"]
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes = np.unique(values.cat.codes.to_numpy())
        return [str(values.cat.categories[k]) for k in codes if k >= 0]
    return [str(v) for v in pd.unique(values.dropna())]


def by_provider(table: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """A per-provider table indexed like every other: one row per provider of `results`, in
    their order, the index of `results`' provider dtype, the columns on the nullable set."""
    dtype = results["provider"].dtype
    names = providers(results)
    index = (pd.CategoricalIndex(names, dtype=dtype, name="provider")
             if isinstance(dtype, pd.CategoricalDtype) else pd.Index(names, name="provider"))
    table = table.set_axis(table.index.astype(object)).reindex(pd.Index(names, dtype=object))
    return nullable(table).set_axis(index)


NULLABLE = frozenset({"Int64", "Float64", "boolean", "string"})


def _replaced(frame: pd.DataFrame, columns: dict) -> pd.DataFrame:
    """`frame` with these columns replaced (the frame itself when there are none)."""
    if not columns:
        return frame
    out = frame.copy(deep=False)
    for column, values in columns.items():
        out[column] = values
    return out


_NUMBERS = frozenset({"integer", "floating", "mixed-integer-float", "empty"})


def _as_dtype(values: pd.Series, dtype: str):
    """A column on `dtype`: whole-column when its values already fit, else value by value."""
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind in (("string", "empty") if dtype == "string" else _NUMBERS):
        try:
            return pd.array(values, dtype=dtype)
        except (TypeError, ValueError):  # 3.7 in an Int64 column: int() truncates it below
            pass
    cleaned = [_none_if_nan(v) for v in values]
    if dtype == "Int64":
        cleaned = [None if v is None else int(v) for v in cleaned]
    elif dtype == "Float64":
        cleaned = [None if v is None else float(v) for v in cleaned]
    elif dtype == "boolean":
        cleaned = [None if v is None else v if isinstance(v, bool) else bool(v)
                   if isinstance(v, int | float) else str(v).lower() in ("true", "1", "1.0")
                   for v in cleaned]
    else:
        cleaned = [None if v is None else str(v) for v in cleaned]
    return pd.array(cleaned, dtype=dtype)


def _none_if_nan(value):
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


FORMATS = (".parquet", ".csv", ".jsonl", ".json")


def check_format(path: str | Path) -> str:
    """The results format of `path` by its extension, or ValueError naming the ones known."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: unknown results format {suffix or '(no extension)'!r} "
                         "(use .parquet, .csv or .jsonl)")
    return suffix


def run_info(dataset, providers, history: str, record_mode: str, params: dict) -> dict:
    """What `harness view` shows about a run: kept in `frame.attrs["run"]` and saved with it."""
    return {
        "dataset": dataset.name,
        "dataset_path": str(dataset.path) if dataset.path is not None else None,
        "providers": [{"name": p.name, "protocol": p.protocol, "model": p.model} for p in providers],
        "history": history, "record_mode": record_mode, "params": dict(params),
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def run_file(path: str | Path) -> Path:
    """Where a CSV or JSONL results file keeps its run metadata (Parquet keeps it inside)."""
    return Path(f"{path}.run.json")


def save(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write results as Parquet, CSV or JSONL, chosen by the file extension."""
    suffix = check_format(path)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".parquet":
            frame.to_parquet(path, index=False)  # frame.attrs (the run) go into its metadata
        else:
            if suffix == ".csv":
                frame.to_csv(path, index=False)
            else:
                frame.to_json(path, orient="records", lines=True, force_ascii=False)
            if frame.attrs.get("run"):
                run_file(path).write_text(json.dumps(frame.attrs["run"], indent=1) + "\n",
                                          encoding="utf-8")
    except OSError as exc:  # a full disk says nothing of which file it was writing
        raise ValueError(f"{path}: cannot write: {exc.strerror or exc}") from None
    return path


# what the summary, the failures line and the cost notes read: every column but the texts
TEXT_COLUMNS = ("prompt", "reference", "response", "raw_finish_reason", "usage_raw", "response_id")
SUMMARY_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMNS if c not in TEXT_COLUMNS)


def load(path: str | Path, providers: Mapping[str, Any] | None = None,
         columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a results file written by `save` back into the documented dtypes.

    A file written before `cost_usd` existed is priced now (`providers` by name, for the
    ones that are no preset). `columns` (Parquet only) reads just those, e.g. `SUMMARY_COLUMNS`
    of a run too big to hold whole; the others come back NA."""
    path = Path(path)
    suffix = check_format(path)
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path, columns=list(columns) if columns else None)
            if columns:
                frame = frame.assign(**{c: None for c in COLUMNS if c not in frame.columns})
        elif suffix == ".csv":
            frame = pd.read_csv(path, dtype={"conversation_id": str}, keep_default_na=False,
                                na_values=[""])
        else:
            frame = pd.read_json(path, orient="records", lines=True, dtype={"conversation_id": str})
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except ValueError as exc:
        raise ValueError(f"{path}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # pyarrow/parser errors have no common base
        raise ValueError(f"{path}: not a results file: {str(exc).splitlines()[0]}") from None
    run = frame.attrs.get("run")
    if run is None and run_file(path).is_file():
        try:
            run = json.loads(run_file(path).read_text(encoding="utf-8"))
        except ValueError:
            run = None  # metadata only feeds the view's header: never a reason to fail
    frame.attrs = {"run": run} if isinstance(run, dict) else {}  # its providers' order
    priced = "cost_usd" in frame.columns
    if not priced:  # written before harness priced rows
        frame = frame.assign(cost_usd=None)
    extra = [c for c in frame.columns if c not in COLUMNS]  # e.g. score columns
    try:
        out = normalize(frame)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    if not priced:
        from .costs import add_costs

        out = add_costs(out, providers)
    if columns:
        out = out[[c for c in COLUMNS if c in columns]]
    if extra:
        out = out.join(_score_dtypes(frame[extra]))
    out.attrs = {"run": run} if isinstance(run, dict) else {}
    out.attrs["path"] = str(path)
    return out


def _score_dtypes(extras: pd.DataFrame) -> pd.DataFrame:
    """Score columns as `harness.scores` made them (CSV/JSONL read pass/fail ones back as
    objects or 1.0/0.0): pass/fail `boolean`, graded and judge ratings `Float64`."""
    from .scores import SCORERS

    typed = {}
    for column in extras.columns:
        values = extras[column]
        known = SCORERS.get(str(column))
        kind = pd.api.types.infer_dtype(values, skipna=True)
        if (known is not None and known.pass_fail) or kind == "boolean":
            typed[column] = pd.Series(_as_dtype(values, "boolean"), index=values.index)
        elif known is not None or str(column).startswith("judge_"):
            typed[column] = pd.Series(_as_dtype(values, "Float64"), index=values.index)
    return nullable(_replaced(extras, typed))


ROW_GROUP_ROWS = 20_000
# strings stay plain strings in the file; `normalize` gives them their dtypes when read
_SCHEMA = pa.schema([(c, _ARROW[DTYPES[c]]) for c in COLUMNS])


def partial_results(path: str | Path) -> Path:
    """Where `ParquetSink` writes until the run is complete (then renamed to `path`)."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


class ParquetSink:
    """Result rows written to a Parquet file in row groups as they complete, in dataset order.

    A row is held only until its conversation, and every conversation before it, has all of
    its rows (`expected`: rows per conversation id, in dataset order); then it goes out in the
    next row group of `row_group` rows, made into a frame by `prepare(rows, ids)` (the results
    frame of those rows, priced). The file is written as `partial_results(path)` and renamed to
    `path` by `close`: a run killed midway leaves `path` as it was, never half written.
    """

    def __init__(self, path: str | Path, expected: Mapping[str, int],
                 prepare: Callable[[list[TurnResult], list[str]], pd.DataFrame],
                 row_group: int | None = None):
        self.path, self.partial = Path(path), partial_results(path)
        self.prepare, self.row_group = prepare, row_group or ROW_GROUP_ROWS
        self.rows = 0  # written so far
        self._ids, self._left = list(expected), dict(expected)
        self._held: dict[str, list[TurnResult]] = {}
        self._next = 0
        self._ready: list[TurnResult] = []
        self._ready_ids: list[str] = []
        self._writer: pq.ParquetWriter | None = None
        self._advance()

    def add(self, result: TurnResult) -> None:
        """Take one finished row; write a row group when enough rows are complete."""
        cid = result.conversation_id
        self._held.setdefault(cid, []).append(result)
        self._left[cid] -= 1
        if self._left[cid] == 0:
            self._advance()

    def _advance(self) -> None:
        ids, left = self._ids, self._left
        while self._next < len(ids) and left[ids[self._next]] <= 0:
            cid = ids[self._next]
            self._ready += self._held.pop(cid, [])
            self._ready_ids.append(cid)
            self._next += 1
        if len(self._ready) >= self.row_group:
            self._write()

    def _write(self) -> None:
        rows, ids = self._ready, self._ready_ids
        self._ready, self._ready_ids = [], []
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # without the stored Arrow schema, the key-value metadata (attrs) is what readers see
            self._writer = pq.ParquetWriter(self.partial, _SCHEMA, store_schema=False)
        if rows:
            table = pa.Table.from_pandas(self.prepare(rows, ids), preserve_index=False)
            self._writer.write_table(table.select(list(COLUMNS)).cast(_SCHEMA))
            self.rows += len(rows)

    def close(self, attrs: Mapping[str, Any] | None = None, *, unfinished: bool = False) -> Path:
        """Write what is left, `attrs` (the run) as the frame's attrs, and rename the file to
        `path`. `unfinished`: a stopped run; the rows of conversations it did not complete are
        written too (after the others)."""
        if unfinished:
            for cid in self._ids[self._next:]:
                rows = self._held.pop(cid, [])
                self._ready += rows
                self._ready_ids += [cid] if rows else []
        try:
            self._write()
            assert self._writer is not None
            if attrs:
                self._writer.add_key_value_metadata({"PANDAS_ATTRS": json.dumps(dict(attrs))})
            self._writer.close()
            os.replace(self.partial, self.path)
        except OSError as exc:
            self.abort()
            raise ValueError(f"{self.path}: cannot write: {exc.strerror or exc}") from None
        return self.path

    @property
    def empty(self) -> bool:
        """No row has come in yet."""
        return not (self.rows or self._ready or any(self._held.values()))

    def abort(self) -> None:
        """Stop without writing `path`; the partial file is removed."""
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(OSError, pa.ArrowException):
                writer.close()
        self.partial.unlink(missing_ok=True)


class JournalWriteError(OSError):
    """The journal could not be written (a full disk), named in one line."""

    def __str__(self) -> str:
        return str(self.strerror)


class Journal:
    """Rows appended to a JSONL file as they complete, so a killed run can resume.

    The first line is a header naming the run by a fingerprint (a sha256 of its settings,
    secrets scrubbed first, never the settings themselves); a journal written by a
    different run is refused rather than silently mixed in. A torn last line (the process
    died mid-write) is dropped.
    """

    def __init__(self, path: str | Path, settings: dict, secrets: list[str] | None = None):
        from .cassettes import scrub_text

        self.path = Path(path)
        canonical = scrub_text(json.dumps(settings, sort_keys=True, default=str), secrets or [])
        self.fingerprint = "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        self.rows: list[dict] = []
        if self.path.exists():
            self._read()
        self._fh = None

    def _read(self) -> None:
        # only lines ending in a newline are whole; what follows the last one is torn
        data = self.path.read_bytes()
        lines = data.split(b"\n")[:-1]
        if not lines and self._header().startswith(data):  # killed mid-header: nothing to resume
            self._drop_torn_tail(0)
            return
        try:
            header = json.loads(lines[0]) if lines else None
        except ValueError:
            header = None
        if not isinstance(header, dict) or "journal" not in header:
            raise ValueError(f"{self.path}:1: not a harness journal (expected a first line "
                             '{"journal": ...}); delete the file to start over')
        if header.get("journal") != self.fingerprint:
            raise ValueError(
                f"{self.path}: an unfinished run with other settings left this journal; "
                "run the same command again to resume it, or delete the file to start over"
            )
        kept = len(lines[0]) + 1  # bytes of the lines read whole
        for line in lines[1:]:
            try:
                row = json.loads(line)
            except ValueError:
                break
            if not isinstance(row, dict):
                break
            self.rows.append(row)
            kept += len(line) + 1
        self._drop_torn_tail(kept)

    def _header(self) -> bytes:
        return (json.dumps({"journal": self.fingerprint}) + "\n").encode("utf-8")

    def _drop_torn_tail(self, kept: int) -> None:
        """Cut what follows the last whole row (a line the process died writing, or one a full
        disk cut short), so that rows appended on resume start on a line of their own."""
        with self.path.open("r+b") as fh:
            if fh.seek(0, 2) > kept:
                fh.truncate(kept)

    def done(self) -> dict[tuple[str, str], dict[int, TurnResult]]:
        """Rows already finished, by (conversation_id, provider) then turn."""
        out: dict[tuple[str, str], dict[int, TurnResult]] = {}
        for row in self.rows:
            result = TurnResult(**row)
            out.setdefault((result.conversation_id, result.provider), {})[result.turn] = result
        return out

    def append(self, result: TurnResult) -> None:
        try:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = self.path.open("a", encoding="utf-8")
                if self._fh.tell() == 0:
                    self._fh.write(self._header().decode("utf-8"))
            self._fh.write(json.dumps(asdict(result), ensure_ascii=False) + "\n")
            self._fh.flush()
        except OSError as exc:  # a full disk: say which file; the next run drops the torn line
            raise JournalWriteError(exc.errno, f"{self.path}: cannot write the journal: "
                                               f"{exc.strerror or exc}") from None

    def close(self, *, remove: bool = False) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            with contextlib.suppress(OSError):  # a write that failed already said so
                fh.close()
        if remove:
            self.path.unlink(missing_ok=True)
