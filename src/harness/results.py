"""Result rows: one per (conversation, turn, provider), a fixed column set, saved by extension."""

from __future__ import annotations

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

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .messages import Reply, Usage
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
DTYPES: dict[str, str] = {
    **{c: "string" for c in COLUMNS},
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
_ARROW = {"string": pa.string(), "Int64": pa.int64(), "Float64": pa.float64(),
          "boolean": pa.bool_()}
_PANDAS = {pa.string(): pd.StringDtype(), pa.int64(): pd.Int64Dtype(),
           pa.float64(): pd.Float64Dtype(), pa.bool_(): pd.BooleanDtype()}


def to_frame(rows: Iterable[TurnResult | dict], order: list[str] | None = None) -> pd.DataFrame:
    """Rows as the results DataFrame: the documented columns and dtypes, in a stable order.

    `order` lists conversation ids in dataset order; without it rows sort by id.
    """
    records = [vars(r) if isinstance(r, TurnResult) else r for r in rows]  # flat: no asdict copy
    try:  # through Arrow, column by column: values of the right types need no inference
        columns = zip(*map(operator.itemgetter(*COLUMNS), records), strict=True)
        table = pa.table({c: pa.array(values, _ARROW[DTYPES[c]])
                          for c, values in zip(COLUMNS, columns, strict=True)})
        frame = table.to_pandas(types_mapper=_PANDAS.get)
    except (pa.ArrowException, KeyError, TypeError, ValueError):  # e.g. 3.7 in an Int64 column
        frame = normalize(pd.DataFrame.from_records(records, columns=list(COLUMNS)))
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


def normalize(frame: pd.DataFrame) -> pd.DataFrame:
    """Coerce any frame with the result columns onto the documented dtypes."""
    if "e2e_ms" not in frame.columns and "latency_ms" in frame.columns:  # the same measurement
        frame = frame.assign(e2e_ms=frame["latency_ms"])
    frame = frame.assign(**{c: None for c in ADDED_COLUMNS if c not in frame.columns})
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"not a results table: missing columns {', '.join(missing)}")
    frame = frame[list(COLUMNS)].copy()
    for column, dtype in DTYPES.items():
        frame[column] = _as_dtype(frame[column], dtype)
    return frame


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
        cleaned = [None if v is None else v if isinstance(v, bool) else str(v).lower() == "true"
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
        extras = frame[extra].copy()
        for column in extra:  # pass/fail scores come back from CSV/JSONL as objects when NA is
            if pd.api.types.infer_dtype(extras[column], skipna=True) == "boolean":  # present
                extras[column] = extras[column].astype("boolean")
        out = out.join(extras)
    out.attrs = {"run": run} if isinstance(run, dict) else {}
    out.attrs["path"] = str(path)
    return out


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
