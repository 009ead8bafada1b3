"""Replay on a Dask cluster: conversations x their providers run on workers, files stay here.

The unit of work is one conversation with all its providers (its turns run in order, as in
one process); units go to workers in batches, since a Dask task costs about a millisecond of
scheduler time and an offline turn far less. The driver (the process that called `replay`)
reads each unit's cassette files and sends their bytes with it; the worker replays and records
in memory and sends back its result rows and the new content of every cassette it changed.
The driver writes those cassettes, then journals the rows: as in one process, a row in the
journal implies its recording is on disk, so a driver killed at any point resumes with the
same command, and no journaled turn is sent again. Workers need no shared filesystem.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from . import cassettes as cassettes_mod
from .cassettes import (
    Cassette,
    CassetteError,
    RecordMode,
    partial_path,
    scrub_url,
)
from .datasets import Dataset
from .messages import Conversation
from .providers import Provider, known_secrets
from .replay import (
    History,
    RetryPolicy,
    Run,
    _replay_conversation,
    begin_run,
    check_run_args,
    finish_run,
    gates,
    result_sink,
    scrub_row,
    stop_sink,
)
from .results import ResultColumns, TurnResult

EXTRA_HINT = "pip install 'harness[dask]'"
BATCH_TURNS = 1000  # turns per task: a task's overhead stays far below its work


class DaskMissing(ImportError):
    """The `dask` extra is not installed; str() is one line naming it."""


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise DaskMissing("replay on Dask needs the 'dask' extra (dask[distributed]): "
                          f"{EXTRA_HINT}") from None
    return distributed


def local_cluster(workers: int, threads_per_worker: int = 1) -> Any:
    """A Dask Client on a fresh LocalCluster of `workers` processes on 127.0.0.1, no dashboard."""
    distributed = _distributed()
    with warnings.catch_warnings():  # its health endpoint moves off a busy port: no news
        warnings.filterwarnings("ignore", message="Port .* is already in use")
        cluster = distributed.LocalCluster(
            n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
            host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR,
        )
    return distributed.Client(cluster)


def connect(scheduler: str) -> Any:
    """A Dask Client on the running cluster whose scheduler is at `scheduler` (tcp://HOST:PORT)."""
    return _distributed().Client(scheduler, timeout="5s")


# --- what travels ---------------------------------------------------------------------------


@dataclass
class _Files:
    """One cassette's files as the driver found them: bytes, not paths."""

    path: Path  # the driver's path: named in errors, and its suffix is the format
    cassette: bytes | None = None
    partial: bytes | None = None
    cassette_mtime: float = 0.0


@dataclass
class _Unit:
    conversation: Conversation
    done: dict[str, dict[int, TurnResult]]  # provider -> turn -> row finished before
    files: dict[str, _Files]  # provider -> its cassette


@dataclass
class _Settings:
    providers: list[Provider]
    history: History
    record_mode: RecordMode
    params: dict[str, Any]
    retry: RetryPolicy
    timeout: float
    concurrency: int
    started: float
    environment: dict[str, str]  # the providers' API keys: a worker sends them
    secrets: list[str]  # what the driver scrubs: a worker scrubs the same
    stream: bool = False


@dataclass
class _Outcome:
    conversation_id: str
    rows: list[TurnResult]
    # provider -> (what it recorded, finished) for every cassette the worker changed: only the
    # new interactions travel back; the driver merges them into what is on disk by then
    written: dict[str, tuple[list[dict], bool]]


# --- on the worker --------------------------------------------------------------------------


@dataclass
class _ShippedCassette(Cassette):
    """A Cassette whose files are the bytes the driver sent; `save` keeps the result here."""

    partial_raws: list[dict] | None = None
    cassette_raws: list[dict] | None = None
    cassette_mtime: float = 0.0
    changed: bool = False
    finished: bool = False
    new_raws: list[dict] = field(default_factory=list)  # what this run recorded, saved or not

    @classmethod
    def shipped(cls, files: _Files, mode: RecordMode, secrets: list[str],
                since: float) -> _ShippedCassette:
        """As `Cassette.open` would open the files the driver read."""
        as_json = files.path.suffix == ".json"
        cassette = cls(path=files.path, mode=mode, secrets=[s for s in secrets if s], since=since,
                       cassette_mtime=files.cassette_mtime)
        if files.partial is not None and mode != "none":
            cassette.partial_raws = cassettes_mod.parse_interactions(
                partial_path(files.path), files.partial, as_json)
        if files.cassette is not None:
            cassette.cassette_raws = cassettes_mod.parse_interactions(files.path, files.cassette)
        raws = cassette.partial_raws if mode != "none" else None
        if raws is None and (mode != "all" or files.cassette_mtime >= since):
            raws = cassette.cassette_raws
            cassette.existed = raws is not None
        cassette._recordings = cassettes_mod._interactions(files.path, raws or [])
        return cassette

    @property
    def unsaved(self) -> bool:
        """`Cassette.unsaved`, of the shipped files: a partial one is made the cassette."""
        return bool(self._recorded) or self.partial_raws is not None

    def save(self, *, finished: bool = True) -> None:
        """`Cassette.save`, into memory: the driver writes the files."""
        if self.mode == "none" or not self.unsaved or not (self._recorded or finished):
            return
        if self._recorded:
            if self.partial_raws is not None:
                on_disk = self.partial_raws
            elif self.mode == "all" and self.cassette_mtime < self.since:
                on_disk = []
            else:
                on_disk = self.cassette_raws or []
            self.new_raws += self._recorded
            self.partial_raws, self._recorded, self.changed = on_disk + self._recorded, [], True
        if finished and self.partial_raws is not None:
            self.cassette_raws, self.partial_raws = self.partial_raws, None
            self.changed = self.finished = True


@dataclass
class _WorkerRun(Run):
    files: dict[tuple[str, str], _Files] = field(default_factory=dict, repr=False)
    opened: dict[tuple[str, str], _ShippedCassette] = field(default_factory=dict, repr=False)

    def open_cassette(self, provider: Provider, conversation: Conversation) -> Cassette:
        key = (provider.name, conversation.id)
        cassette = _ShippedCassette.shipped(self.files[key], self.record_mode,
                                            self.secrets[provider.name], self.started)
        self.opened[key] = cassette
        return cassette

    def finish_soon(self, cassette: Cassette, rows: object) -> None:
        cassette.save(finished=True)  # now, in memory: the batch ships it to the driver

    def save_soon(self, cassette: Cassette) -> None:
        cassette.save(finished=False)


def _replay_batch(settings: _Settings, units: list[_Unit]) -> list[_Outcome]:
    """Run on a worker: replay `units`, `settings.concurrency` conversations at a time."""
    for name, value in settings.environment.items():
        os.environ.setdefault(name, value)
    return asyncio.run(_replay_units(settings, units))


async def _replay_units(settings: _Settings, units: list[_Unit]) -> list[_Outcome]:
    run = _WorkerRun(
        Dataset(name="", path=None, conversations=[u.conversation for u in units]),
        settings.providers, settings.history, settings.record_mode, Path("."), "yaml",
        settings.params, settings.retry, settings.timeout, settings.concurrency,
        done={(u.conversation.id, p): rows for u in units for p, rows in u.done.items()},
        started=settings.started, stream=settings.stream,
        files={(p, u.conversation.id): f for u in units for p, f in u.files.items()},
    )
    secrets = settings.secrets
    run.secrets = {p.name: secrets for p in run.providers}
    run.match_urls = {p.name: scrub_url(run.urls[p.name], secrets) for p in run.providers}
    limiters = gates(run.providers, None)  # rate and token limits, each worker its share
    outcomes: dict[str, _Outcome] = {}

    async def one(unit: _Unit) -> None:
        rows: list[TurnResult] = []

        def emit(result: TurnResult, fresh: bool = True) -> None:
            if fresh:  # the driver has the rows finished before
                rows.append(scrub_row(result, secrets))

        conversation = unit.conversation
        await _replay_conversation(run, conversation, limiters, emit)
        written = {}
        for provider in run.providers:
            cassette = run.opened.pop((provider.name, conversation.id))
            if cassette.changed:
                written[provider.name] = (cassette.new_raws, cassette.finished)
        outcomes[conversation.id] = _Outcome(conversation.id, rows, written)

    queue = iter(units)

    async def worker() -> None:
        for unit in queue:
            await one(unit)

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, settings.concurrency))))
    finally:
        await run.aclose()
    return [outcomes[u.conversation.id] for u in units]


# --- on the driver --------------------------------------------------------------------------


def _read_files(path: Path, mode: RecordMode) -> _Files:
    files = _Files(path=path)
    try:
        files.cassette = path.read_bytes()
        files.cassette_mtime = path.stat().st_mtime
    except FileNotFoundError:
        pass
    if mode != "none":  # mode none replays finished cassettes only
        with contextlib.suppress(FileNotFoundError):
            files.partial = partial_path(path).read_bytes()
    return files


def _write_back(run: Run, path: Path, recorded: list[dict], finished: bool) -> None:
    """What a worker recorded, written by `Cassette.write` itself: under the folder's lock,
    merged with what is on disk now (another process may have recorded into the same file
    since the driver read it), into the partial file or, once complete, the cassette."""
    Cassette(path=path, mode=run.record_mode, since=run.started).write(list(recorded), finished)


def replay_on_dask(
    client: Any,
    dataset: Dataset,
    providers: Sequence[Provider],
    *,
    history: History = "auto",
    record_mode: RecordMode = "none",
    cassette_dir: str | Path = "cassettes",
    serializer: str = "yaml",
    params: dict[str, Any] | None = None,
    concurrency: int = 4,
    retry: RetryPolicy | None = None,
    timeout: float = 120.0,
    progress: bool = True,
    on_row: Callable[[TurnResult], None] | None = None,
    journal: str | Path | None = None,
    keep_journal: bool = False,
    started_at: float | None = None,
    batch_turns: int | None = None,
    stream: bool = False,
    max_concurrency: int | None = None,
    out: str | Path | None = None,
) -> pd.DataFrame:
    """`replay_async`'s run with its conversations on the Dask cluster of `client`.

    `concurrency` is conversations in flight per worker; a provider's `rate_limit` is split
    evenly between the workers; `batch_turns` is turns per Dask task (default: up to 1000).
    Everything else, the results included, is as in one process.
    """
    check_run_args(history, providers, params)
    if concurrency == "auto":
        raise ValueError("--concurrency auto is not available on Dask yet (expected a number: "
                         "conversations in flight per worker)")
    distributed = _distributed()
    run = Run(dataset, list(providers), history, record_mode, Path(cassette_dir), serializer,
              dict(params or {}), retry or RetryPolicy(), timeout, max(1, concurrency),
              stream=stream, started=time.time() if started_at is None else started_at)
    secrets = known_secrets(run.providers)
    log, folders = begin_run(run, journal)  # the same journal as one process's: either resumes
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    shares = [p.model_copy(update={  # each worker its share of the per-minute limits
        "rate_limit": p.rate_limit and p.rate_limit / workers,
        "token_limit": p.token_limit and p.token_limit / workers}) for p in run.providers]
    settings = _Settings(shares, history, record_mode, run.params, run.retry, timeout,
                         run.concurrency, run.started,
                         {p.api_key_env: k for p in run.providers
                          if p.api_key_env and (k := p.api_key())}, secrets, stream)
    rows = ResultColumns()
    sink = result_sink(run, out)  # a .parquet out: rows streamed there, not held
    keep = sink.add if sink is not None else rows.append
    total = sum(dataset.turn_counts()) * len(run.providers)
    if batch_turns is None:  # a small run still spreads over every worker
        batch_turns = max(1, min(BATCH_TURNS, total // (4 * workers)))
    from tqdm import tqdm

    bar = tqdm(total=total, desc=f"replay {dataset.name} on {workers} Dask workers", unit="turn",
               disable=not progress)

    def emit(result: TurnResult, fresh: bool = True) -> None:
        keep(result)
        bar.update(1)
        if fresh and log is not None:
            log.append(result)
        if on_row is not None:
            on_row(result)

    def batches() -> Iterator[list[_Unit]]:
        batch: list[_Unit] = []
        turns = 0
        for conversation, n_turns in zip(dataset, dataset.turn_counts(), strict=True):
            done = {p.name: dict(run.done.get((conversation.id, p.name), {})) for p in run.providers}
            for rows_done in done.values():
                for result in rows_done.values():
                    emit(result, fresh=False)
            if all(len(d) >= n_turns for d in done.values()):
                continue  # finished before: nothing to send
            files = {p.name: _read_files(run.cassette_for(p, conversation), record_mode)
                     for p in run.providers}
            batch.append(_Unit(conversation, {k: v for k, v in done.items() if v}, files))
            turns += n_turns * len(run.providers)
            if turns >= batch_turns:
                yield batch
                batch, turns = [], 0
        if batch:
            yield batch

    def receive(outcomes: list[_Outcome], paths: Mapping[tuple[str, str], Path]) -> None:
        for outcome in outcomes:  # cassettes first: a journaled row's recording is on disk
            for name, (interactions, finished) in outcome.written.items():
                _write_back(run, paths[(name, outcome.conversation_id)], interactions, finished)
            for result in outcome.rows:
                emit(result)

    in_flight = distributed.as_completed()
    pending: dict[Any, dict[tuple[str, str], Path]] = {}
    try:
        source = batches()
        for batch in source:  # at most two batches per worker are held at once
            future = client.submit(_replay_batch, settings, batch, pure=False)
            pending[future] = {(n, u.conversation.id): f.path
                               for u in batch for n, f in u.files.items()}
            in_flight.add(future)
            if len(pending) >= 2 * workers:
                done_future = next(in_flight)
                receive(done_future.result(), pending.pop(done_future))
        for done_future in in_flight:
            receive(done_future.result(), pending.pop(done_future))
    except BaseException as exc:
        for future in pending:
            future.cancel()
        if log is not None and isinstance(exc, CassetteError) and not log.rows:
            log.close(remove=True)
        stop_sink(sink, run, exc)
        raise
    finally:
        bar.close()
        if log is not None:
            log.close()
    return finish_run(run, rows, folders, log, keep_journal, out, sink)
