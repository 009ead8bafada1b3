"""The engine: every user turn of every conversation, sent to every provider, as result rows.

Conversations run concurrently (one shared client: harness.transport); the turns of a conversation
run in order, because in `self` and `auto` history a turn's prompt holds the provider's own
earlier replies. Each (provider, conversation) has its own cassette; what a conversation
records is kept in its partial file (after every turn when journaling, else when it ends or
is stopped) and becomes the cassette when the conversation completes, so a run stopped at
any point (kill -9, Ctrl-C, a full disk) resumes where it was: the same command again
replays what was recorded and sends only the rest.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import functools
import gc
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import pandas as pd

from . import results as results_mod
from .cassettes import (
    Cassette,
    CassetteError,
    CassetteSaver,
    MissingRecording,
    RecordedHeaders,
    RecordMode,
    begin_rerecording,
    cassette_name,
    cassette_path,
    dataset_folder,
    end_rerecording,
    partial_path,
    recorded_providers,
    scrub_bytes,
    scrub_text,
    scrub_url,
)
from .costs import add_costs
from .datasets import Dataset, Turn, conversation_turns
from .limits import AdaptiveConcurrency, Gate, TokenLimiter
from .messages import AssistantMessage, Conversation, Message, Reply
from .providers import Provider, ProviderConfigError, check_params, encode_body, known_secrets
from .results import TurnResult
from .timings import Timings, columns, send_streamed
from .tools import calls_json
from .transport import Answer, Client, LazyHeaders, Prepared, answer_of, make_client

History = Literal["reference", "self", "auto"]
HISTORY_MODES: tuple[str, ...] = ("reference", "self", "auto")
AUTO_CEILING = 1024  # conversations in flight with concurrency "auto"
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; Retry-After is honoured up to `max_wait`."""

    attempts: int = 4
    base: float = 0.5
    max_wait: float = 30.0

    def wait(self, attempt: int, response: httpx.Response | Answer | None) -> float:
        hinted = _retry_after(response) if response is not None else None
        if hinted is not None:
            return min(hinted, self.max_wait)
        return random.uniform(0, min(self.max_wait, self.base * 2 ** (attempt - 1)))


def _retry_after(response: httpx.Response | Answer) -> float | None:
    if ms := response.headers.get("retry-after-ms"):
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


_gc_lock = threading.Lock()
_gc_runs = 0  # runs going in this process
_gc_before: tuple[tuple[int, int, int], bool] = ((700, 10, 10), False)  # thresholds, froze


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """For a run: what existed before it frozen out of the collector's scans, and the young
    generation collected 30x less often; as it was once the last run going ends. With hundreds
    of conversations in flight, each holding its recordings and rows, the cyclic collector
    took a third of the engine's CPU, most of it scanning the same long-lived objects."""
    global _gc_runs, _gc_before
    with _gc_lock:
        if _gc_runs == 0:
            # a caller's own gc.freeze() is left as it is: unfreeze() would thaw its objects too
            froze = gc.get_freeze_count() == 0
            _gc_before = gc.get_threshold(), froze
            if froze:
                gc.freeze()
            gc.set_threshold(max(_gc_before[0][0], 20_000), *_gc_before[0][1:])
        _gc_runs += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_runs -= 1
            if _gc_runs == 0:
                thresholds, froze = _gc_before
                gc.set_threshold(*thresholds)
                if froze:
                    gc.unfreeze()


class _RateLimiter:
    """At most `per_minute` requests a minute, spaced evenly."""

    def __init__(self, per_minute: float):
        self.interval = 60.0 / per_minute
        self.next_at = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self.lock:
            now = time.monotonic()
            delay = self.next_at - now
            self.next_at = max(now, self.next_at) + self.interval
        if delay > 0:
            await asyncio.sleep(delay)


@dataclass
class _Exchange:
    """What one logical call produced after its retries."""

    status: int | None = None
    reply: Reply | None = None
    latency_ms: float | None = None
    attempts: int = 0
    error: str | None = None
    timings: Timings | None = None  # of a stream
    timing: str | None = None  # live | recorded


@dataclass
class Run:
    """One replay run's settings, shared by every conversation task."""

    dataset: Dataset
    providers: Sequence[Provider]
    history: History = "auto"
    record_mode: RecordMode = "none"
    cassette_dir: Path = Path("cassettes")
    serializer: str = "yaml"
    params: dict[str, Any] = field(default_factory=dict)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float = 120.0
    concurrency: int = 4
    adaptive: bool = False  # `concurrency` is then the ceiling of an AIMD window per provider
    done: Mapping[tuple[str, str], Mapping[int, TurnResult]] = field(default_factory=dict)
    journaling: bool = False
    stream: bool = False  # ask every provider for its stream; harness stamps it as it arrives
    # turns whose latency was measured by this run (`live`) or read from a cassette (`recorded`)
    timing: Counter[str] = field(default_factory=Counter, repr=False)
    started: float = field(default_factory=time.time)  # mode `all` replaces what is older
    urls: dict[str, httpx.URL] = field(init=False, repr=False)
    match_urls: dict[str, str] = field(init=False, repr=False)
    secrets: dict[str, list[str]] = field(init=False, repr=False)
    parsers: dict[str, Callable[..., Reply]] = field(init=False, repr=False)
    prepared: dict[str, Prepared] = field(init=False, repr=False)
    finishing: set[asyncio.Task] = field(default_factory=set, init=False, repr=False)
    failure: BaseException | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # per provider, once rather than per turn: its URL as httpx sends it (so as it was
        # recorded), the keys to scrub from what it records, its adapter's parse_response
        self.urls = {p.name: httpx.URL(p.endpoint(self.stream or bool(p.params.get("stream"))))
                     for p in self.providers}  # parsed once: httpx parses a str on every request
        shared = known_secrets(self.providers)  # any key may be echoed by any server
        self.secrets = {p.name: shared for p in self.providers}
        # a request is looked up in its cassette as it was recorded: scrubbed
        self.match_urls = {p.name: scrub_url(str(self.urls[p.name]), shared) for p in self.providers}
        self.parsers = {p.name: p.adapter.parse_response for p in self.providers}
        # its URL and headers framed, and their recorded form scrubbed, once for the run
        self.prepared = {p.name: Prepared(self.urls[p.name],
                                          httpx.Headers(p.request_headers(p.api_key())))
                         for p in self.providers}

    @functools.cached_property
    def client(self) -> Client:
        """The HTTP client, made on first need: a replay served from cassettes never needs
        one, and making one (TLS setup) costs more than replaying a thousand turns."""
        limits = httpx.Limits(max_connections=self.concurrency * len(self.providers))
        return make_client(self.timeout, limits)

    @functools.cached_property
    def saver(self) -> CassetteSaver:
        return CassetteSaver()

    async def save(self, cassette: Cassette, finished: bool) -> None:
        """`cassette.save(finished=...)`, off the event loop, batched with the other saves."""
        if cassette.unsaved:  # a conversation replayed from its cassette writes nothing
            await self.saver.save(cassette, finished)

    def finish_soon(self, cassette: Cassette, rows: _JournaledRows | None) -> None:
        """A conversation's last save (and, journaled, the emits of its rows once their saves
        are done) while its worker goes on to the next conversation: waiting for the disk there
        cost every worker a batch's save per conversation. A failure stops the run at a
        worker's next conversation (`check`) or at the end (`drain`)."""
        task = asyncio.ensure_future(_finish_conversation(self, cassette, rows))
        self.finishing.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self.finishing.discard(task)
        if not task.cancelled() and task.exception() is not None and self.failure is None:
            self.failure = task.exception()

    def check(self) -> None:
        """Raise the error a conversation's finish ended with."""
        if self.failure is not None:
            raise self.failure

    async def drain(self) -> None:
        """Wait for every conversation's finish; raise the first error one ended with."""
        while self.finishing:
            await asyncio.gather(*self.finishing, return_exceptions=True)
        self.check()

    def save_soon(self, cassette: Cassette) -> None:
        """Queue the save of an unfinished conversation that was stopped; `aclose` writes it."""
        if not cassette.unsaved:
            return
        done = self.saver.save(cassette, finished=False)
        done.add_done_callback(lambda f: f.cancelled() or f.exception())  # the stop is the error

    async def aclose(self) -> None:
        if "client" in self.__dict__:
            await self.client.aclose()
        if "saver" in self.__dict__:  # blocking, at the end: what is queued reaches the disk
            self.saver.close()

    def open_cassette(self, provider: Provider, conversation: Conversation) -> Cassette:
        """The cassette of (provider, conversation), opened for this run's record mode."""
        return Cassette.open(self.cassette_for(provider, conversation), self.record_mode,
                             self.secrets[provider.name], since=self.started)

    def cassette_for(self, provider: Provider, conversation: Conversation | str) -> Path:
        """The cassette path of (provider, conversation or its id); not cached: a run of
        millions of conversations would hold a Path for each."""
        cid = conversation if isinstance(conversation, str) else conversation.id
        return cassette_path(self.cassette_dir, self.dataset.name, provider.name, cid,
                             self.serializer)


def scrub_row(result: TurnResult, secrets: list[str]) -> TurnResult:
    """`result` with every secret scrubbed from every text column, in place."""
    if secrets:
        for name, value in vars(result).items():
            if isinstance(value, str) and value:
                setattr(result, name, scrub_text(value, secrets))
    return result


def check_ready(run: Run, ids: Sequence[str]) -> None:
    """Fail before any call when a recording or an API key the run needs is missing."""
    for provider in run.providers:
        folder = run.cassette_for(provider, "-").parent  # one listing, not a stat per file
        present = set(os.listdir(folder)) if folder.is_dir() else set()
        # names only: a Path per conversation costs ten times more than the listing
        absent = [cid for cid in ids if cassette_name(cid, run.serializer) not in present]
        if run.record_mode == "none" and absent:
            path = run.cassette_for(provider, absent[0])
            unfinished = partial_path(path)
            raise MissingRecording(
                f"no recording for conversation {absent[0]!r} turn 1 provider {provider.name!r}: "
                f"{path} does not exist ({len(absent)} of {len(ids)} missing"
                + (f"; {unfinished.name} is an unfinished recording"
                   if unfinished.name in present else "")
                + "); record it with --record-mode once"
                + (f" and {provider.api_key_env} set" if provider.api_key_env else "")
            )
        needs_network = run.record_mode in ("all", "new_episodes") or (
            run.record_mode == "once" and absent
        )
        if needs_network and provider.api_key_env and not provider.api_key():
            raise ProviderConfigError(
                f"provider {provider.name!r}: {provider.api_key_env} is not set "
                f"(record mode {run.record_mode!r} needs the API key)"
            )


def _prefix(
    conversation: Conversation, turns: list[Turn], k: int,
    own: Mapping[int, AssistantMessage], history: History,
) -> list[Message] | int:
    """The messages sent at turn k, or the number of an earlier turn whose failure blocks it.

    `own` holds, by turn, the provider's replies that may go into its history: a failed
    turn has none. Each is made once, not once for every later turn that sends it."""
    if history == "reference":
        return list(turns[k - 1].prefix)
    messages = conversation.messages
    starts = [t.index for t in turns]
    out: list[Message] = list(messages[: starts[0]])
    for j in range(k - 1):
        out.append(messages[starts[j]])
        segment = messages[starts[j] + 1 : starts[j + 1]]
        if history == "auto" and any(m.role == "assistant" for m in segment):
            out.extend(segment)
            continue
        reply = own.get(j + 1)
        if reply is None:
            return j + 1
        out.append(reply)
    out.append(messages[starts[k - 1]])
    return out


async def _call(
    run: Run, provider: Provider, cassette: Cassette,
    prepared: Prepared, content: bytes, turn: Turn, limiter: Gate | None,
) -> _Exchange:
    """POST `content` as `prepared`: from the cassette when it holds the exchange, else over HTTP.

    Every attempt is recorded, those that got no HTTP answer too, and a replayed attempt goes
    through the same steps as a live one, so an offline replay gives the live run's row.
    Neither a replayed nor (but for a stream) a live exchange becomes an httpx Request or
    Response: at scale, building them cost more than the rest of the turn.
    """
    exchange = _Exchange()
    parse = run.parsers[provider.name]
    match_url, match_body = run.match_urls[provider.name], scrub_bytes(content, cassette.secrets)
    for attempt in range(1, run.retry.attempts + 1):
        exchange.attempts = attempt
        response: httpx.Response | Answer | None = None
        answer: tuple[int, Mapping[str, str], bytes] | None = None
        failure: str | None = None  # the attempt got no HTTP answer
        hit = cassette.take("POST", match_url, match_body)
        ticket = None
        if hit is not None:
            failure = hit.transport_error()
            if failure is None:
                answer = hit.status, RecordedHeaders(hit), hit.response_body
                exchange.latency_ms, exchange.timings = hit.recorded_timing()
                exchange.timing = "recorded" if exchange.latency_ms is not None else None
        elif cassette.may_record:
            client = run.client  # made before the wait, so the limiter spaces the sends
            ticket = await limiter.enter(content) if limiter is not None else None
            request = cassette.request_entry(prepared, content)
            started = time.perf_counter()
            timings = body = None
            try:
                if run.stream:
                    response, body, timings = await send_streamed(
                        client, prepared.request(content), provider.adapter, started)
                elif isinstance(client, Client):
                    response = await client.post(prepared, content)
                else:  # another client (bench/live_engine.py measures httpx's own)
                    response = await answer_of(client, prepared.request(content))
            except httpx.TransportError as exc:
                failure = scrub_text(f"{type(exc).__name__}: {exc}" if str(exc)
                                     else type(exc).__name__, run.secrets[provider.name])
                cassette.record_failure(request, type(exc).__name__, failure,
                                        (time.perf_counter() - started) * 1000)
            else:
                exchange.latency_ms = round((time.perf_counter() - started) * 1000, 1)
                if timings is not None:  # the stream's end is its latency
                    exchange.latency_ms = timings.end
                exchange.timings, exchange.timing = timings, "live"
                cassette.record(request, response, exchange.latency_ms, body=body, timings=timings)
                answer = (response.status_code,
                          LazyHeaders(response) if body is None else response.headers,
                          response.content if body is None else body)
        elif attempt > 1:  # the recording gave up after fewer attempts than this run allows
            exchange.attempts = attempt - 1
            break
        else:
            raise MissingRecording(
                f"no recording for conversation {turn.conversation_id!r} turn {turn.turn} "
                f"provider {provider.name!r} in {cassette.path} "
                f"(record it with --record-mode new_episodes"
                + (f" and {provider.api_key_env} set)" if provider.api_key_env else ")")
            )
        if answer is not None:
            exchange.status, exchange.error = answer[0], None
            try:
                exchange.reply = parse(*answer)
            except ValueError as exc:
                exchange.reply, exchange.error = None, str(exc)
            retriable = exchange.status in RETRY_STATUSES or exchange.reply is None
        else:
            exchange.status = exchange.reply = None
            exchange.error = failure
            retriable = True
        if ticket is not None:
            await _leave(limiter, ticket, exchange, response)
        if not retriable or attempt == run.retry.attempts:
            break
        if hit is None:  # a replayed retry need not wait: the recording already did
            await asyncio.sleep(run.retry.wait(attempt, response))
    return exchange


async def _leave(gate: Gate, ticket: tuple[float, float], exchange: _Exchange,
                 response: httpx.Response | Answer | None) -> None:
    usage = exchange.reply.usage if exchange.reply is not None else None
    used = None
    if usage is not None and (usage.input_tokens is not None or usage.output_tokens is not None):
        used = (usage.input_tokens or 0) + (usage.output_tokens or 0)
    hinted = _retry_after(response) if response is not None else None
    await gate.leave(ticket, exchange.status, used, hinted)


def gates(providers: Sequence[Provider], adaptive_ceiling: int | None) -> dict[str, Gate]:
    """Per provider, the limits its live calls pass: requests/min, tokens/min and, with
    `adaptive_ceiling`, an AIMD window of calls in flight (up to that many)."""
    out = {}
    for p in providers:
        gate = Gate(_RateLimiter(p.rate_limit).wait if p.rate_limit else None,
                    TokenLimiter(p.token_limit) if p.token_limit else None,
                    AdaptiveConcurrency(ceiling=adaptive_ceiling) if adaptive_ceiling else None)
        if gate.rate or gate.tokens or gate.adaptive:
            out[p.name] = gate
    return out


class _JournaledRows:
    """A journaled conversation's rows, emitted in turn order, each once the save of its
    recording is done: the conversation goes on meanwhile, so that its saves share batches
    (`CassetteSaver`) rather than each waiting for the disk. A failed save is raised by
    `check`; rows still waiting when the conversation stops are not emitted (their turns
    replay from the partial cassette on resume)."""

    def __init__(self, emit: Callable[..., None]):
        self.emit, self.closed = emit, False
        self.waiting: collections.deque[tuple[TurnResult, bool, asyncio.Future | None]] = (
            collections.deque())
        self.error: BaseException | None = None

    def add(self, result: TurnResult, fresh: bool = True,
            saved: asyncio.Future | None = None) -> None:
        self.waiting.append((result, fresh, saved))
        if saved is not None:
            saved.add_done_callback(self.flush)
        self.flush()
        self.check()

    def flush(self, settled: asyncio.Future | None = None) -> None:
        if settled is not None and not settled.cancelled():
            settled.exception()  # seen: else asyncio logs each later failed save at exit
        while self.waiting and not self.closed:
            result, fresh, saved = self.waiting[0]
            if saved is not None:
                if not saved.done():
                    return
                if saved.cancelled() or saved.exception() is not None:
                    self.error = self.error or (asyncio.CancelledError() if saved.cancelled()
                                                else saved.exception())
                    self.closed = True
                    return
            self.waiting.popleft()
            try:  # run from a save's callback too: what emit raises (on_row's) stops the task
                self.emit(result, fresh=fresh)
            except BaseException as exc:
                self.error, self.closed = exc, True
                return

    def check(self) -> None:
        """Raise the error of a save that failed, or of an emit."""
        if self.error is not None:
            raise self.error

    async def finish(self) -> None:
        """Emit every row once its save is done; raise the error of one that failed."""
        pending = [saved for _, _, saved in self.waiting if saved is not None]
        await asyncio.gather(*pending, return_exceptions=True)
        self.flush()
        self.check()


async def _replay_conversation(
    run: Run, conversation: Conversation,
    limiters: dict[str, Gate], emit: Callable[..., None],
) -> None:
    turns = conversation_turns(conversation)

    async def one_provider(provider: Provider) -> None:
        done = run.done.get((conversation.id, provider.name), {})
        cassette = run.open_cassette(provider, conversation)
        own: dict[int, AssistantMessage] = {}  # the replies a later prompt may send
        keep_own = run.history != "reference"  # which sends the dataset's own instead
        prepared = run.prepared[provider.name]
        rows = _JournaledRows(emit) if run.journaling else None
        out = emit if rows is None else rows.add
        try:
            for turn in turns:
                if turn.turn in done:  # resumed: finished before, not sent again
                    result = done[turn.turn]
                    if result.status == "ok":
                        own[turn.turn] = AssistantMessage(content=result.response or "")
                    out(result, fresh=False)
                    continue
                row = {"conversation_id": conversation.id, "turn": turn.turn,
                       "provider": provider.name, "prompt": turn.prompt,
                       "reference": turn.reference,
                       "reference_tool_calls": calls_json(turn.reference_tool_calls)}
                prefix = _prefix(conversation, turns, turn.turn, own, run.history)
                if isinstance(prefix, int):
                    out(TurnResult(**row, status="skipped",
                                    error=f"turn {prefix} failed, so its reply is missing "
                                          f"from the {run.history} history"))
                    continue
                try:
                    body = provider.build_body(prefix, run.params, turn.tools, run.stream)
                except ValueError as exc:  # a prompt this protocol cannot express
                    out(TurnResult(**row, model=provider.model, status="error",
                                    finish_reason="error", error=f"cannot build request: {exc}"))
                    continue
                content = encode_body(body)
                exchange = await _call(run, provider, cassette, prepared, content,
                                       turn, limiters.get(provider.name))
                result = _row(exchange, row, provider)
                if exchange.timing is not None:
                    run.timing[exchange.timing] += 1
                if (keep_own and exchange.reply is not None
                        and exchange.reply.finish_reason != "error"):
                    own[turn.turn] = AssistantMessage(content=exchange.reply.text)
                if rows is None:
                    emit(result)
                else:  # a row in the journal implies its recording is on disk
                    rows.add(result, saved=run.saver.save(cassette, finished=False)
                             if cassette.unsaved else None)  # a replayed turn saves nothing
            if cassette.unsaved or (rows is not None and rows.waiting):
                run.finish_soon(cassette, rows)  # else replayed: nothing to save, every row out
        except BaseException:  # stopped: what was recorded is kept (queued behind its saves)
            if rows is not None:
                rows.closed = True
            run.save_soon(cassette)
            raise

    if len(run.providers) == 1:  # the usual case needs no task per conversation
        await one_provider(run.providers[0])
    else:
        await asyncio.gather(*(one_provider(p) for p in run.providers))


async def _finish_conversation(run: Run, cassette: Cassette,
                               rows: _JournaledRows | None) -> None:
    try:
        if rows is not None:  # first: a finish renames the partial file, which must then
            await rows.finish()  # hold every turn (a save that failed took its recordings)
        await run.save(cassette, finished=True)
    except BaseException:  # stopped: no row is emitted after the run's end
        if rows is not None:
            rows.closed = True
        raise


def _row(exchange: _Exchange, row: dict, provider: Provider) -> TurnResult:
    reply, latency = exchange.reply, exchange.latency_ms
    row["http_status"], row["latency_ms"], row["attempts"] = (exchange.status, latency,
                                                              exchange.attempts)
    if latency is not None:  # every column given at once: a row is made on every turn
        row.update(columns(exchange.timings, latency,
                           reply.usage.output_tokens if reply is not None else None))
    if reply is None:
        return TurnResult(**row, model=provider.model, status="error", finish_reason="error",
                          error=exchange.error)
    result = TurnResult.from_reply(reply, **row)
    result.model = result.model or provider.model
    return result


def journal_settings(run: Run) -> dict[str, Any]:
    """What names a run in its journal (hashed, never stored): a resume must match it."""
    return {
        "dataset": run.dataset.name, "conversations": len(run.dataset), "history": run.history,
        "providers": [p.model_dump(mode="json") for p in run.providers],
        "params": run.params, "record_mode": run.record_mode,
        **({"stream": True} if run.stream else {}),
    }


def check_run_args(history: str, providers: Sequence[Provider],
                   params: Mapping[str, Any] | None) -> None:
    """Refuse, before any call, a run that cannot be what was asked."""
    if history not in HISTORY_MODES:
        raise ValueError(f"unknown history mode {history!r} (expected one of {HISTORY_MODES})")
    names = [p.name for p in providers]
    if len(set(names)) != len(names):  # their rows would collide after the run, not before
        raise ValueError(f"a provider is named more than once: {', '.join(names)}")
    check_params(params or {}, "params.")  # NaN is not JSON: never send it


def begin_run(run: Run, journal: str | Path | None) -> tuple[results_mod.Journal | None, list[Path]]:
    """Open the journal (what finished before is `run.done`), check that every recording and
    key the run needs is there, and mark a re-recording begun; the journal and the folders."""
    log = None
    if journal is not None:
        log = results_mod.Journal(journal, journal_settings(run), known_secrets(run.providers))
        run.done, run.journaling = log.done(), True
    check_ready(run, run.dataset.ids())
    folders = [cassette_path(run.cassette_dir, run.dataset.name, p.name, "-").parent
               for p in run.providers]
    if run.record_mode == "all":  # an interrupted re-recording is continued, not begun again
        run.started = min([begin_rerecording(f, run.started) for f in folders], default=run.started)
    return log, folders


def _priced_frame(run: Run, rows: list[TurnResult] | results_mod.ResultColumns,
                  order: list[str]) -> pd.DataFrame:
    """`rows` as the results frame, conversations in `order`, providers in the run's, priced."""
    frame = results_mod.to_frame(rows, order=order, providers=[p.name for p in run.providers])
    return add_costs(frame, {p.name: p for p in run.providers})


def _run_attrs(run: Run) -> dict[str, Any]:
    """The run's settings as its results carry them in `attrs["run"]`."""
    info = results_mod.run_info(run.dataset, run.providers, run.history, run.record_mode,
                                run.params)
    if run.stream:  # which stream timings this run measured, which it read back from cassettes
        info.update(stream=True, timing=dict(run.timing))
    return info


def result_sink(run: Run, out: str | Path | None) -> results_mod.ParquetSink | None:
    """Where a run with a `.parquet` `out` streams its rows (see `results.ParquetSink`)."""
    if out is None or results_mod.check_format(out) != ".parquet":
        return None
    n = len(run.providers)
    expected = {cid: k * n for cid, k in zip(run.dataset.ids(), run.dataset.turn_counts(),
                                             strict=True)}
    return results_mod.ParquetSink(out, expected, functools.partial(_priced_frame, run))


def finish_run(run: Run, rows: results_mod.ResultColumns, folders: list[Path],
               log: results_mod.Journal | None, keep_journal: bool, out: str | Path | None = None,
               sink: results_mod.ParquetSink | None = None) -> pd.DataFrame:
    """The results frame of a run that completed: priced, with the run's settings in
    `attrs`, saved to `out` if given (`sink`: its rows went there already); a re-recording
    marked done and (unless kept) the journal removed."""
    if run.record_mode == "all":
        for folder in folders:
            end_rerecording(folder)
    info = _run_attrs(run)
    if sink is not None:
        sink.close({"run": info})
        frame = results_mod.load(sink.path, columns=results_mod.SUMMARY_COLUMNS)
    else:
        frame = _priced_frame(run, rows, run.dataset.ids())
        frame.attrs["run"] = info
        if out is not None:
            results_mod.save(frame, out)
    if log is not None and not keep_journal:
        log.close(remove=True)
    return frame


def stop_sink(sink: results_mod.ParquetSink | None, run: Run, exc: BaseException) -> None:
    """A run that failed leaves its `out` as it was; one stopped (Ctrl-C) leaves there the rows
    that finished, as the CLI always did."""
    if sink is None:
        return
    if isinstance(exc, KeyboardInterrupt | asyncio.CancelledError) and not sink.empty:
        with contextlib.suppress(ValueError):
            sink.close({"run": _run_attrs(run)}, unfinished=True)
            return
    sink.abort()


async def replay_async(
    dataset: Dataset,
    providers: Sequence[Provider],
    *,
    history: History = "auto",
    record_mode: RecordMode = "none",
    cassette_dir: str | Path = "cassettes",
    serializer: str = "yaml",
    params: dict[str, Any] | None = None,
    concurrency: int | Literal["auto"] = 4,
    retry: RetryPolicy | None = None,
    timeout: float = 120.0,
    progress: bool = True,
    on_row: Callable[[TurnResult], None] | None = None,
    journal: str | Path | None = None,
    keep_journal: bool = False,
    started_at: float | None = None,
    stream: bool = False,
    max_concurrency: int = AUTO_CEILING,
    out: str | Path | None = None,
) -> pd.DataFrame:
    """Replay `dataset` against `providers`; returns the results DataFrame.

    `out`: also save the results there (.parquet, .csv or .jsonl). A `.parquet` file is
    written in row groups as conversations complete and the rows are not held, so a run of
    millions of turns fits in memory: the frame returned then has `results.SUMMARY_COLUMNS`
    only (what the summary reads; `results.load(out)` has every column). `out` is written under
    a hidden name and renamed when complete: a killed run leaves it as it was; a stopped one
    (Ctrl-C) leaves there the rows that finished.

    `stream`: ask each provider for its stream; harness's transport stamps time to first
    byte, token and content token, last token and end (`ttft_ms`, ...: see harness.timings),
    keeps them in the cassette and reads them back on replay.

    With `journal`, every row is appended to that JSONL file as it completes; running
    again with the same journal resumes: turns already in it are not sent again. The
    journal is removed once the run has finished, unless `keep_journal` (the caller
    removes it once the results are safely written). `concurrency="auto"` adapts the calls
    in flight to what each provider accepts (AIMD, up to `max_concurrency`). `started_at`
    (default: now) is when the run began: record mode `all` replaces what was recorded
    before it, and keeps what another process records into the same cassettes meanwhile.
    """
    check_run_args(history, providers, params)
    adaptive = concurrency == "auto"
    if not adaptive and not isinstance(concurrency, int):
        raise ValueError(f"concurrency must be a number or 'auto', got {concurrency!r}")
    run = Run(dataset, list(providers), history, record_mode, Path(cassette_dir), serializer,
              dict(params or {}), retry or RetryPolicy(), timeout,
              max(1, max_concurrency if adaptive else concurrency), adaptive,
              stream=stream, started=time.time() if started_at is None else started_at)
    secrets = known_secrets(run.providers)
    log, folders = begin_run(run, journal)
    limiters = gates(run.providers, run.concurrency if run.adaptive else None)
    rows = results_mod.ResultColumns()
    sink = result_sink(run, out)
    keep = sink.add if sink is not None else rows.append
    total = sum(dataset.turn_counts()) * len(run.providers)
    from tqdm import tqdm  # text, not a widget: a saved notebook keeps the final count

    bar = tqdm(total=total, desc=f"replay {dataset.name}", unit="turn", disable=not progress)

    def emit(result: TurnResult, fresh: bool = True) -> None:
        if fresh:  # before it reaches the journal, the table, stdout or a report
            scrub_row(result, secrets)
        keep(result)
        bar.update(1)
        if fresh and log is not None:
            log.append(result)
        if on_row is not None:
            on_row(result)

    queue = iter(dataset)  # `concurrency` workers, each taking the next one (a lazy dataset
    # builds it then)

    async def worker() -> None:
        for conversation in queue:
            run.check()
            await _replay_conversation(run, conversation, limiters, emit)
            if len(run.finishing) >= max(64, run.concurrency):  # a replay from cassettes
                # never waits on the network: without this its finishes (and their cassettes)
                # pile up until the end
                await asyncio.wait(set(run.finishing), return_when=asyncio.FIRST_COMPLETED)

    workers = min(run.concurrency, max(1, len(dataset)))  # no idle worker
    tasks = [asyncio.ensure_future(worker()) for _ in range(workers)]
    with _fewer_collections():  # the frame of every row too: a full collection scans them all
        try:
            await asyncio.gather(*tasks)
            await run.drain()
        except BaseException as exc:
            tasks += run.finishing
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if log is not None and isinstance(exc, CassetteError) and not log.rows:
                log.close(remove=True)  # a corrupt cassette is bad input: leave no journal
            stop_sink(sink, run, exc)
            raise
        finally:
            await run.aclose()
            bar.close()
            if log is not None:
                log.close()
        return finish_run(run, rows, folders, log, keep_journal, out, sink)


ProviderSpec = str | Provider


def providers_for(providers: ProviderSpec | Sequence[ProviderSpec] | None, dataset: Dataset,
                  providers_file: str | Path | None = None,
                  cassette_dir: str | Path = "cassettes") -> list[Provider]:
    """Names, Providers or a mix as Providers; names are looked up among the presets and
    `providers_file` (default: `harness.toml` in the working directory, as the CLI does).
    None means every provider with cassettes for this dataset."""
    from .providers import load_providers_file, resolve

    if providers_file is None and Path("harness.toml").is_file():
        providers_file = "harness.toml"
    extra = load_providers_file(providers_file) if providers_file is not None else {}
    if providers is None:
        providers = recorded_providers(cassette_dir, dataset.name)
        if not providers:
            raise ProviderConfigError(f"no cassettes for {dataset.name!r} under "
                                      f"{dataset_folder(cassette_dir, dataset.name)}/: "
                                      "name the providers to replay against")
    if isinstance(providers, str | Provider):
        providers = [providers]
    return [p if isinstance(p, Provider) else resolve([p], extra)[0] for p in providers]


def replay(dataset: Dataset | str | Path,
           providers: ProviderSpec | Sequence[ProviderSpec] | None = None, *,
           providers_file: str | Path | None = None, **kwargs: Any) -> pd.DataFrame:
    """Synchronous `replay_async`; works inside Jupyter's running event loop too.

    `dataset` may be a path; `providers` names, Providers or a mix (see `providers_for`).
    With `client` (a dask.distributed Client), the conversations run on its cluster's workers
    and this process writes every file (see `harness.distributed_replay`).
    """
    if not isinstance(dataset, Dataset):  # a .parquet `out` holds no row: nor the dataset
        from .datasets import load_dataset

        out = kwargs.get("out")
        dataset = load_dataset(dataset, lazy=out is not None
                               and results_mod.check_format(out) == ".parquet")
    providers = providers_for(providers, dataset, providers_file,
                              kwargs.get("cassette_dir", "cassettes"))
    client = kwargs.pop("client", None)
    if client is not None:
        from .distributed_replay import replay_on_dask

        return replay_on_dask(client, dataset, providers, **kwargs)
    box: dict[str, Any] = {}

    async def run() -> None:
        # the frame is kept out of the task's result: on 3.11 asyncio.run's exit reprs its
        # SIGINT handler, and with it the task and its result (a DataFrame: ~20 ms of repr)
        box["value"] = await replay_async(dataset, providers, **kwargs)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(run())
        return box["value"]

    def target() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
