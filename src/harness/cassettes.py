"""Cassettes: HTTP exchanges kept in vcrpy's format, replayed through a hash index.

Layout: one cassette per (dataset, provider, conversation)::

    cassettes/<dataset-stem>/<provider>/<conversation-id>.yaml   (or .json)

Each file is a plain vcrpy cassette (`version: 1`, `interactions: [...]`), so vcrpy and
pytest-recording replay it too. Splitting per conversation keeps recording linear and lets
concurrent conversations record without sharing a file. While a conversation is being
recorded its exchanges go to `<conversation-id>.yaml.partial` (same format), renamed to the
cassette when the conversation completes: a run that was stopped leaves a partial file that
the next run replays and continues, and record mode `once` can tell it from a finished
cassette. Every write is temp file + rename under the folder's lock (`filelock`), merged
with what is on disk, so two processes recording into one folder lose nothing; a run's saves
go in batches, off the event loop (`CassetteSaver`). The YAML is
written in flow style that is also JSON (see `_yaml_text`), so it is parsed as JSON;
block-style YAML, as vcrpy writes it, goes through libyaml.

Requests match on method, host, path and the canonical JSON body (sorted keys), never on
headers. Lookups go through dicts built once per file, so replay is O(1) per request
instead of vcrpy's scan; the k-th identical request gets the k-th recording.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import errno
import functools
import gzip
import hashlib
import json
import math
import os
import re
import threading
import time
import zlib
from collections import defaultdict, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import orjson
import yaml
from filelock import FileLock

from .providers import encode_body, is_secret_name
from .timings import HEADER as TIMINGS_HEADER
from .timings import Timings
from .transport import Answer, Prepared

RecordMode = Literal["none", "once", "new_episodes", "all"]
RECORD_MODES: tuple[str, ...] = ("none", "once", "new_episodes", "all")

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Safe YAML that refuses aliases: a few hundred bytes of them expand to gigabytes."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        if node in self.constructed_objects or node in self.recursive_objects:
            raise yaml.constructor.ConstructorError(
                None, None, "a YAML alias (*name): aliases are not allowed in a cassette "
                "(expected plain vcrpy YAML)", node.start_mark)
        return super().construct_object(node, deep)

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

SECRET_HEADERS = frozenset(
    {
        "authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key",
        "cookie", "set-cookie", "openai-organization", "openai-project", "anthropic-organization-id",
    }
)
SECRET_QUERY_PARAMS = frozenset({"key", "api_key", "apikey", "access_token", "token"})
SCRUBBED = "<scrubbed>"
LATENCY_HEADER = "x-harness-latency-ms"  # beside it, a stream's stamps: TIMINGS_HEADER
# A request that got no HTTP answer (dropped connection, timeout, short read) is recorded
# as a 599 response marked by this header, its error text in the body: stock vcrpy loads it.
TRANSPORT_ERROR_HEADER = "x-harness-transport-error"
TRANSPORT_ERROR_STATUS = 599
PARTIAL_SUFFIX = ".partial"
LOCK_TIMEOUT = 120.0
SAVE_THREADS = 8  # the fsyncs of a batch's cassettes, at once
_BODY_FRAMING = ("content-encoding", "content-length", "transfer-encoding")


class CassetteError(ValueError):
    """A cassette file that cannot be read as a vcrpy cassette."""


class CassetteWriteError(OSError):
    """A cassette that could not be written (a full disk, no permission), named in one line."""

    def __str__(self) -> str:
        return str(self.strerror)


class MissingRecording(LookupError):
    """Replay asked for a request the cassette does not hold."""


@dataclass(slots=True)
class Interaction:
    """One recorded request and its response, bodies as raw (decoded) bytes."""

    method: str
    uri: str
    request_headers: dict[str, list[str]]
    request_body: bytes
    status: int
    reason: str
    response_headers: dict[str, list[str]]
    response_body: bytes

    def request_json(self) -> Any:
        """The request body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.request_body)
        except ValueError:
            return None

    def header(self, name: str) -> str | None:
        """A response header, case-insensitively (vcrpy keeps the recorder's spelling)."""
        return _header(self.response_headers, name.lower())

    def replay_headers(self) -> list[tuple[str, str]]:
        """The response headers to replay: the body is stored decoded, so no encoding/length."""
        return [(k, v) for k, values in self.response_headers.items() for v in values
                if k.lower() not in _BODY_FRAMING]

    def latency_ms(self) -> float | None:
        """The latency harness recorded for this exchange, or None (vcrpy records none)."""
        return _latency(self.header(LATENCY_HEADER))

    def timings(self) -> Timings | None:
        """The stream timings harness recorded for this exchange, or None (not streamed)."""
        return Timings.parse(self.header(TIMINGS_HEADER))

    def recorded_timing(self) -> tuple[float | None, Timings | None]:
        """`latency_ms()` and `timings()`, as every replayed turn reads them. Harness writes
        each header name in lower case: where the latency header is spelled so, so is the
        stamps' if there is one, and no other spelling of it needs looking for."""
        headers = self.response_headers
        latency = headers.get(LATENCY_HEADER)
        if type(latency) is not list or not latency:
            return self.latency_ms(), self.timings()
        stamps = headers.get(TIMINGS_HEADER)
        return (_latency(latency[0]),
                Timings.parse(stamps[0] if type(stamps) is list and stamps else stamps))

    def transport_error(self) -> str | None:
        """The error of a request that got no HTTP answer, as harness recorded it, or None."""
        if self.status != TRANSPORT_ERROR_STATUS:
            return None
        kind = self.header(TRANSPORT_ERROR_HEADER)
        if kind is None:
            return None
        try:
            return str(json.loads(self.response_body)["harness_transport_error"])
        except (ValueError, KeyError, TypeError):
            return kind


def _latency(value: str | None) -> float | None:
    """A recorded latency header's milliseconds; None for none (or "nan")."""
    latency = float(value or "nan")
    return None if math.isnan(latency) else latency


def _header(headers: dict[str, list[str]], name: str) -> str | None:
    """The first value of a header; `name` in lower case, as harness and httpx write it."""
    values = headers.get(name)
    # recorded by a client that kept the server's spelling; most lookups are of a header that
    # is not there (the stream stamps of a plain call), in names all in lower case: one
    # lower() of them all tells that, in half the time of lowering each name
    if values is None and not _lower_case(headers) and name in map(str.lower, headers):
        values = next(v for k, v in headers.items() if k.lower() == name)
    return values[0] if isinstance(values, list) and values else values


def _lower_case(headers: dict[str, list[str]]) -> bool:
    """Whether every header name is in lower case (False for a name that is not a string)."""
    try:
        names = "\n".join(headers)
    except TypeError:
        return False
    return names.lower() == names


class RecordedHeaders(Mapping[str, str]):
    """A recording's response headers as `httpx.Headers`, built only when first read.

    Adapters rarely read headers, and building them for every replayed turn cost more than
    parsing the body.
    """

    def __init__(self, interaction: Interaction):
        self._interaction = interaction
        self._headers: httpx.Headers | None = None

    def _get(self) -> httpx.Headers:
        if self._headers is None:
            self._headers = httpx.Headers(self._interaction.replay_headers())
        return self._headers

    def __getitem__(self, name: str) -> str:
        return self._get()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


def _as_bytes(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    # pydantic-ai's `parsed_body` layout: the body as structured YAML
    return json.dumps(value).encode("utf-8")


def _body(part: dict) -> bytes:
    """A stored body as bytes; a compressed one decompressed (only binary bodies can be)."""
    if "parsed_body" not in part:  # the text bodies harness and vcrpy write, with fewer calls
        value = part.get("body")
        if isinstance(value, dict) and "base64_string" not in value:
            value = value.get("string")
        if isinstance(value, str):
            return value.encode("utf-8")
    value = _body_field(part)
    if isinstance(value, bytes):
        return _decode_body(value, part.get("headers") or {})
    return _as_bytes(value)


def _decode_body(body: bytes, headers: dict[str, list[str]]) -> bytes:
    encoding = (_header(headers, "content-encoding") or "").lower()
    if body[:2] == b"\x1f\x8b" or encoding == "gzip":
        try:
            return gzip.decompress(body)
        except (OSError, EOFError):
            return body
    if encoding == "deflate":
        try:
            return zlib.decompress(body)
        except zlib.error:
            return body
    return body


def _body_field(part: dict) -> Any:
    if "parsed_body" in part:
        return part["parsed_body"]
    body = part.get("body")
    if isinstance(body, dict):
        if "base64_string" in body:
            return base64.b64decode(body["base64_string"])
        return body.get("string")
    return body


def _interaction(raw: Any, where: str) -> Interaction:
    try:
        return _make_interaction(raw)
    except KeyError as exc:
        raise CassetteError(f"{where}: missing {exc.args[0]!r} (expected a vcrpy request and "
                            "response)") from None
    except (TypeError, AttributeError, ValueError) as exc:
        raise CassetteError(f"{where}: not a vcrpy interaction ({exc})") from None


def read_cassette(path: str | Path) -> list[Interaction]:
    """Every interaction of a vcrpy cassette (YAML or JSON), bodies decoded.

    Reads what vcrpy and pytest-recording write, gzip and base64 bodies included, and
    pydantic-ai's `parsed_body` variant.
    """
    path = path if isinstance(path, Path) else Path(path)  # Path(a Path) costs at scale
    return _interactions(path, _load_raw(path))


def _make_interaction(raw: Any) -> Interaction:
    request, response = raw["request"], raw["response"]
    status = response.get("status") or {}
    return Interaction(str(request["method"]).upper(), str(request["uri"]),
                       request.get("headers") or {}, _body(request), int(status.get("code", 0)),
                       str(status.get("message", "")), response.get("headers") or {},
                       _body(response))


def _interactions(path: Path, raws: list[dict]) -> list[Interaction]:
    try:  # no text naming each interaction made up front: only a failure needs one
        return [_make_interaction(raw) for raw in raws]
    except (KeyError, TypeError, AttributeError, ValueError):
        return [_interaction(raw, f"{path}: interaction {i}") for i, raw in enumerate(raws)]


def _load_raw(path: Path, missing_ok: bool = False, as_json: bool | None = None
              ) -> list[dict] | None:
    """The `interactions` list of a cassette file as stored, or one CassetteError line.

    With `missing_ok`, None when there is no such file. `as_json` overrides the format the
    file's suffix says (a partial file has the format of its cassette).
    """
    raw = _read_or_none(path)
    if raw is None:
        if missing_ok:
            return None
        raise CassetteError(f"{path}: cannot read: {os.strerror(errno.ENOENT)}")
    return parse_interactions(path, raw, as_json)


def _read_or_none(path: Path) -> bytes | None:
    """The file's bytes, None if there is none, or one CassetteError line."""
    try:
        return _read_bytes(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CassetteError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _read_bytes(path: Path) -> bytes:
    """`path.read_bytes()` in (usually) one read of the size the file has: without the
    buffered file object that builds, which cost a third of reading a small cassette."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size + 1)
        if len(data) == size:  # a read stops at the end of the file, so that was all of it
            return data
        chunks = [data]
        while chunk := os.read(fd, max(size, 1 << 16)):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def parse_interactions(path: Path, raw: bytes, as_json: bool | None = None) -> list[dict]:
    """The `interactions` list of a cassette file's bytes `raw`, or one CassetteError line
    naming `path` (the bytes need not have been read from it: a Dask worker gets them)."""
    try:
        data = _parse(path, raw, as_json)
    except UnicodeDecodeError:
        raise CassetteError(f"{path}: not a cassette: the file is not UTF-8 text") from None
    except RecursionError:
        raise CassetteError(f"{path}: not a valid cassette: nested too deeply") from None
    except (yaml.YAMLError, ValueError) as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f"{path}:{line + 1}" if line is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CassetteError(f"{where}: not a valid cassette: {problem}") from None
    if not isinstance(data, dict) or not isinstance(data.get("interactions"), list):
        raise CassetteError(f"{path}: not a vcrpy cassette: expected an 'interactions' list")
    if data.get("version", 1) != 1:
        raise CassetteError(
            f"{path}: unsupported cassette version {data.get('version')!r} (expected 1)"
        )
    return data["interactions"]


def _parse(path: Path, raw: bytes, as_json: bool | None = None) -> Any:
    """JSON through orjson (which checks the UTF-8 itself); what it refuses (NaN, lone
    surrogates, bad UTF-8) through the standard library; YAML in block style through libyaml."""
    as_json = path.suffix == ".json" if as_json is None else as_json
    if as_json or raw[:64].lstrip()[:1] == b"{":  # harness's YAML is JSON too
        try:
            return orjson.loads(raw)
        except ValueError:
            pass
    text = raw.decode("utf-8")  # UnicodeDecodeError: not a text file
    return json.loads(text) if as_json else yaml.load(raw, Loader=_Loader)


# --- matching -------------------------------------------------------------------------------


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))  # json.dumps's, made once


def canonical_body(body: bytes) -> bytes:
    """JSON bodies with sorted keys and no whitespace; anything else as it is."""
    try:
        return _CANONICAL.encode(json.loads(body)).encode()
    except ValueError:
        return body


def _compact(body: bytes) -> bytes | None:
    """A recorded JSON body as harness sends one now: keys in their order, no spaces."""
    try:
        return encode_body(orjson.loads(body))
    except (TypeError, ValueError):  # not JSON, or not what orjson reads: the index decides
        return None


def request_key(method: str, url: str, body: bytes) -> bytes:
    """What a request is matched on: method, host, path and canonical body (never headers)."""
    h = hashlib.blake2b(_where(method, url), digest_size=16)
    h.update(canonical_body(body))
    return h.digest()


@functools.lru_cache(maxsize=1024)
def _where(method: str, url: str) -> bytes:
    parts = urlsplit(url)
    pieces = (method.upper(), parts.hostname or "", parts.path)
    return b"".join(piece.encode() + b"\0" for piece in pieces)


# --- scrubbing ------------------------------------------------------------------------------


MIN_RUN = 12  # no run this long of a secret's characters is ever written
_SHORT_SECRET = 6  # shorter secrets (a short password) are scrubbed only where they stand


def scrub_url(url: str, secrets: list[str]) -> str:
    """`url` with its userinfo and key-like query values replaced, and any secret in it."""
    return _scrub_url(url, tuple(secrets))


@functools.lru_cache(maxsize=256)  # a run sends to a few URLs, thousands of times each
def _scrub_url(url: str, secrets: tuple[str, ...]) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{SCRUBBED}@{netloc.rpartition('@')[2]}"
    query = urlencode([
        (k, SCRUBBED if _secret_param(k) else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ], safe="<>")
    return scrub_text(urlunsplit(parts._replace(netloc=netloc, query=query)), secrets)


def _secret_param(name: str) -> bool:
    return name.lower() in SECRET_QUERY_PARAMS or is_secret_name(name)


def scrub_text(text: str, secrets: list[str] | tuple[str, ...]) -> str:
    """`text` with every secret, and every run of `MIN_RUN` or more of its characters,
    replaced by `<scrubbed>` (a server may echo part of a key)."""
    if not secrets or not text:
        return text
    chunks, pattern = _secret_pattern(tuple(secrets))
    if not any(chunk in text for chunk in chunks):  # the usual case, at C speed
        return text
    spans: list[list[int]] = []
    for match in pattern.finditer(text):
        start, end = match.start(), match.start() + len(match.group(1))
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    if not spans:
        return text
    out, at = [], 0
    for start, end in spans:
        out += [text[at:start], SCRUBBED]
        at = end
    out.append(text[at:])
    return "".join(out)


@functools.lru_cache(maxsize=64)
def _secret_pattern(secrets: tuple[str, ...]) -> tuple[tuple[str, ...], re.Pattern[str]]:
    """A lookahead at every position for a whole short secret or a `MIN_RUN`-long piece of a
    long one (overlapping hits are merged into the run they cover), and the pieces a text
    must hold for it to match: every `MIN_RUN`-long run holds one of a secret's aligned
    `MIN_RUN // 2`-long chunks."""
    pieces: set[str] = set()
    chunks: set[str] = set()
    half = MIN_RUN // 2
    for secret in secrets:
        if len(secret) <= MIN_RUN:
            if len(secret) >= _SHORT_SECRET:
                pieces.add(secret)
                chunks.add(secret)
        else:
            pieces.update(secret[i:i + MIN_RUN] for i in range(len(secret) - MIN_RUN + 1))
            chunks.update(secret[i:i + half] for i in range(0, len(secret) - half + 1, half))
    if not pieces:
        return (), re.compile(r"(?!)()")
    alternatives = "|".join(re.escape(p) for p in sorted(pieces, key=len, reverse=True))
    return tuple(chunks), re.compile(f"(?=({alternatives}))")


def scrub_bytes(body: bytes, secrets: list[str] | tuple[str, ...]) -> bytes:
    """`scrub_text` of a UTF-8 body; the body as it is when there is nothing to scrub."""
    if not secrets or not body:
        return body
    text = _to_text(body)
    if not isinstance(text, str):
        return body
    scrubbed = scrub_text(text, secrets)
    return body if scrubbed is text else scrubbed.encode("utf-8")


def scrub_headers(headers: dict[str, list[str]], secrets: list[str]) -> dict[str, list[str]]:
    """Credential headers replaced whole; in the others, any secret in the value."""
    return {
        name: [SCRUBBED] if _secret_header(name.lower())
        else [scrub_text(v, secrets) for v in values]
        for name, values in headers.items()
    }


@functools.lru_cache(maxsize=1024)
def _secret_header(name: str) -> bool:
    # x-ratelimit-remaining-tokens counts tokens: it is no credential
    return name in SECRET_HEADERS or (is_secret_name(name) and "ratelimit" not in name
                                      and "rate-limit" not in name)


# --- the store ------------------------------------------------------------------------------


_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
# names Windows keeps for devices, with any extension (CON, nul.txt, COM1...)
_RESERVED_NAME = re.compile(r"(CON|PRN|AUX|NUL|COM[0-9]|LPT[0-9]|CONIN\$|CONOUT\$)(\..*)?",
                            re.IGNORECASE)


def _safe_name(name: str) -> str:
    """`name` as one plain file name: letters, digits, `._-`, never empty, `.`/`..`, hidden
    or a device name; a changed name gets a hash of the original, so two never collide."""
    safe = _UNSAFE_NAME.sub("_", name)[:80]
    if not safe or safe.startswith(".") or _RESERVED_NAME.fullmatch(safe):
        safe = "_" + safe
    if safe.endswith("."):  # Windows drops trailing dots
        safe += "_"
    if safe != name:
        safe += "-" + hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return safe


def cassette_name(conversation: str, serializer: str = "yaml") -> str:
    """The file name of a conversation's cassette inside its provider's folder."""
    return f"{_safe_name(conversation)}.{serializer}"


def cassette_path(root: str | Path, dataset: str, provider: str, conversation: str,
                  serializer: str = "yaml") -> Path:
    """Where one conversation's recordings for one provider live: always inside
    `root/<dataset>/<provider>/`, whatever the three names hold."""
    folder = _folder(root, dataset, provider)
    path = folder / cassette_name(conversation, serializer)
    # a safe name with a plain suffix stays in its folder: the check, which built a second
    # Path per conversation, only for another suffix
    if not _PLAIN_SUFFIX.fullmatch(serializer) and (path.parent != folder
                                                    or path.name in (".", "..")):
        raise CassetteError(f"cassette name {conversation!r} leaves {folder}")
    return path


_PLAIN_SUFFIX = re.compile(r"[A-Za-z0-9]+")


def dataset_folder(root: str | Path, dataset: str) -> Path:
    """The folder holding every provider's cassettes of one dataset."""
    return Path(root) / _safe_name(dataset)


def recorded_providers(root: str | Path, dataset: str) -> list[str]:
    """The providers with a cassette folder for `dataset`, sorted."""
    folder = dataset_folder(root, dataset)
    if not folder.is_dir():
        return []
    # judge-<provider>/ folders hold a judge's calls (harness score --judge), not a provider's
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("judge-"))


@functools.lru_cache(maxsize=256)
def _folder(root: str | Path, dataset: str, provider: str) -> Path:
    folder = dataset_folder(root, dataset) / _safe_name(provider)
    base = Path(root).resolve()
    if folder.resolve().parent.parent != base:  # a symlinked folder may point elsewhere
        raise CassetteError(f"cassette folder {folder} resolves outside {root}")
    return folder


def _headers_dict(headers: httpx.Headers) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for name, value in headers.multi_items():
        out[name].append(value)
    return dict(out)


def _to_text(body: bytes) -> str | bytes:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body


def partial_path(path: Path) -> Path:
    """Where a cassette's exchanges are kept until its conversation completes."""
    return path.with_name(path.name + PARTIAL_SUFFIX)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold the lock every writer of a cassette in `folder` takes (a hidden file there).

    One lock per folder, not per file: a batch of saves (`CassetteSaver`) takes it once, as
    taking it costs more than writing a small cassette. The lock file is removed while still
    held, so none is left behind: filelock (4.x) sees that a lock file it waited on was
    unlinked and takes the new one instead.
    """
    lock_path = folder / ".harness.lock"
    with FileLock(lock_path, timeout=LOCK_TIMEOUT):
        try:
            yield
        finally:
            lock_path.unlink(missing_ok=True)


RERECORDING_MARKER = ".harness-rerecording"


def begin_rerecording(folder: Path, started: float) -> float:
    """Mode `all` into `folder`: when its re-recording began. The marker of one that did not
    finish is there: it is continued (what it recorded is kept, not sent again)."""
    marker = folder / RERECORDING_MARKER
    try:
        return float(json.loads(marker.read_bytes())["started"])
    except (OSError, ValueError, KeyError, TypeError):  # none, or torn: begin afresh
        pass
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"started": started}), encoding="utf-8")
    return started


def end_rerecording(folder: Path) -> None:
    """Mode `all` into `folder` has finished: the next one replaces all of it again."""
    (folder / RERECORDING_MARKER).unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


@dataclass
class Cassette:
    """One cassette file opened for replay and/or recording in a vcrpy record mode.

    A recording run replays and extends the partial file an unfinished run left, if any;
    `save` merges what this run recorded into what is on disk, under the cassette's lock.
    """

    path: Path
    mode: RecordMode = "none"
    secrets: list[str] = field(default_factory=list)
    existed: bool = False  # a finished cassette: in mode `once` it is replayed, never extended
    _recordings: list[Interaction] = field(default_factory=list)
    _played: set[int] = field(default_factory=set)
    _first_unplayed: int = 0
    _by_key: dict[bytes, deque[int]] | None = None
    _recorded: list[dict] = field(default_factory=list)  # not saved yet
    # what this cassette last wrote to its partial file: the bytes, the interactions and
    # their text; a next save that finds the same bytes there neither parses nor renders them
    _partial: tuple[bytes, list[dict], list[str]] | None = field(default=None, repr=False)
    # a partial file holds this cassette's unfinished recording (read at open, or written
    # since): its last save makes that file the cassette
    _in_partial: bool = False
    # mode `all` replaces a cassette written before this time (the run's start); one written
    # since then is this run's (another process's, or a stopped run's it continues)
    since: float = 0.0

    @classmethod
    def open(cls, path: str | Path, mode: RecordMode = "none",
             secrets: list[str] | None = None, since: float | None = None) -> Cassette:
        """Open for `mode`: `none` reads the cassette; the recording modes read the partial
        file of an unfinished run if there is one, else the cassette (`all`: only one
        written since the run began).

        `since`: when the run began (default: now); mode `all` replaces what was recorded
        before it."""
        path = path if isinstance(path, Path) else Path(path)
        cassette = cls(path=path, mode=mode, secrets=[s for s in secrets or [] if s],
                       since=time.time() if since is None else since)
        raws = None
        if mode != "none":
            raws = _load_raw(partial_path(path), missing_ok=True, as_json=path.suffix == ".json")
            cassette._in_partial = raws is not None
        if raws is None and (mode != "all" or _mtime(path) >= cassette.since):
            # in mode `all`, a cassette written since the run began is this run's (another
            # process's, or an interrupted run's it continues): replayed, not sent again
            raws = _load_raw(path, missing_ok=True)
            cassette.existed = raws is not None
        cassette._recordings = _interactions(path, raws or [])
        return cassette

    @property
    def unsaved(self) -> bool:
        """Whether a save has anything to do: recordings not saved yet, or a partial file to
        make the cassette. A conversation replayed from its cassette queues no save."""
        return bool(self._recorded) or self._in_partial

    @property
    def may_record(self) -> bool:
        return self.mode in ("all", "new_episodes") or (self.mode == "once" and not self.existed)

    def take(self, method: str, url: str, body: bytes) -> Interaction | None:
        """The next recording of this request, used up; None when there is none left.

        The rule: the first unplayed recording whose method, host, path and JSON body match.
        A replay usually asks in recorded order for the very bytes recorded; when the first
        unplayed recording is byte for byte this request, it is the answer, with no JSON
        parsed; so is it when its body made compact is (recorded by an older harness, or by
        another client, with json.dumps's spaces). Anything else goes through the index of
        canonical keys, built on first need.
        """
        if not self._recordings:
            return None
        while self._first_unplayed in self._played:
            self._first_unplayed += 1
        if self._first_unplayed < len(self._recordings):
            hit = self._recordings[self._first_unplayed]
            if hit.uri == url and hit.method == method and (
                    hit.request_body == body or _compact(hit.request_body) == body):
                return self._use(self._first_unplayed)
        if self._by_key is None:
            self._by_key = {}
            for i, hit in enumerate(self._recordings):
                key = request_key(hit.method, hit.uri, hit.request_body)
                self._by_key.setdefault(key, deque()).append(i)
        queue = self._by_key.get(request_key(method, url, body))
        while queue and queue[0] in self._played:
            queue.popleft()
        return self._use(queue.popleft()) if queue else None

    def _use(self, i: int) -> Interaction:
        self._played.add(i)
        return self._recordings[i]

    def play(self, request: httpx.Request) -> tuple[httpx.Response, float] | None:
        """The next recording of this request with its recorded latency, or None."""
        hit = self.take(request.method, str(request.url), request.content)
        if hit is None:
            return None
        latency = hit.latency_ms()
        response = httpx.Response(hit.status, headers=hit.replay_headers(),
                                  content=hit.response_body, request=request)
        return response, float("nan") if latency is None else latency

    def _request(self, request: httpx.Request | dict) -> dict:
        if isinstance(request, dict):  # already as recorded (see `request_entry`)
            return request
        secrets = self.secrets
        return {
            "body": _scrub_body(request.content, secrets),
            "headers": scrub_headers(_headers_dict(request.headers), secrets),
            "method": request.method,
            "uri": scrub_url(str(request.url), secrets),
        }

    def request_entry(self, prepared: Prepared, content: bytes) -> dict:
        """The recorded form of a POST of `content` as `prepared` (what `_request` makes of
        its httpx Request), a lean one's headers scrubbed once for all that share `prepared`
        and the same secrets."""
        if not prepared.lean:
            return self._request(prepared.request(content))
        secrets = self.secrets
        headers = prepared.recorded
        if headers is None or prepared.recorded_for != secrets:
            raw = [*prepared.raw, (b"Content-Length", b"0")]
            headers = scrub_headers(_headers_dict(httpx.Headers(raw)), secrets)
            prepared.recorded, prepared.recorded_for = headers, secrets
        headers = dict(headers)
        headers["content-length"] = [scrub_text(str(len(content)), secrets)]
        return {"body": _scrub_body(content, secrets), "headers": headers, "method": "POST",
                "uri": scrub_url(prepared.uri, secrets)}

    def record(self, request: httpx.Request | dict, response: httpx.Response | Answer,
               latency_ms: float, *, body: bytes | None = None,
               timings: Timings | None = None) -> None:
        """Keep one exchange (credentials scrubbed) for the next `save`; `body` is the decoded
        body of a streamed response (read as it arrived), `timings` its stamps."""
        items = (response.header_items() if isinstance(response, Answer)
                 else response.headers.multi_items())
        response_headers: dict[str, list[str]] = {}
        for name, value in items:
            if name.lower() not in _BODY_FRAMING:
                response_headers.setdefault(name, []).append(value)
        response_headers[LATENCY_HEADER] = [f"{latency_ms:.1f}"]
        if timings is not None:
            response_headers[TIMINGS_HEADER] = [timings.header()]
        self._recorded.append({
            "request": self._request(request),
            "response": {
                "body": {"string": _scrub_body(response.content if body is None else body,
                                               self.secrets)},
                "headers": scrub_headers(response_headers, self.secrets),
                "status": {"code": response.status_code, "message": response.reason_phrase},
            },
        })

    def record_failure(self, request: httpx.Request | dict, kind: str, error: str,
                       latency_ms: float) -> None:
        """Keep a request that got no HTTP answer, so that a replay fails the same way.

        `kind` is the exception's class name, `error` the text the results show (scrubbed).
        """
        body = json.dumps({"harness_transport_error": error}, ensure_ascii=False)
        self._recorded.append({
            "request": self._request(request),
            "response": {
                "body": {"string": body},
                "headers": {"content-type": ["application/json"],
                            TRANSPORT_ERROR_HEADER: [kind],
                            LATENCY_HEADER: [f"{latency_ms:.1f}"]},
                "status": {"code": TRANSPORT_ERROR_STATUS,
                           "message": "no HTTP response (recorded by harness)"},
            },
        })

    def save(self, *, finished: bool = True) -> None:
        """Write what was recorded since the last save into the partial file, merged with what
        is on disk, and make that the cassette; with `finished=False` (a conversation not
        complete yet) it stays the partial file, which the next run continues.

        Under the lock of the cassette's folder: another process may record into the same file.
        """
        recorded = self.take_recorded()
        try:
            self.write(recorded, finished)
        except BaseException:
            self.give_back(recorded)
            raise

    def take_recorded(self) -> list[dict]:
        """What was recorded since the last save, taken for a `write`."""
        recorded, self._recorded = self._recorded, []
        return recorded

    def give_back(self, recorded: list[dict]) -> None:
        """Return what a failed `write` took, ahead of what was recorded since: kept for the
        next save."""
        self._recorded = recorded + self._recorded

    def write(self, recorded: list[dict], finished: bool, *, locked: bool = False,
              files: _Files | None = None) -> None:
        """`save` of `recorded` (taken from this cassette by the caller); `locked`: the caller
        holds the folder's lock (see `CassetteSaver`); `files`: staged there for the caller to
        commit (under that lock), else committed now."""
        if self.mode == "none" or not (recorded or finished):
            return
        partial = partial_path(self.path)
        if not recorded and not partial.exists():
            return
        if not locked:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        staged = _Files() if files is None else files
        with contextlib.nullcontext() if locked else _locked(self.path.parent):
            wrote_partial = False
            if recorded:
                as_json = self.path.suffix == ".json"
                raws, known = self._read_partial(partial, as_json)
                if raws is None and finished:  # no unfinished recording: straight to the cassette
                    staged.write(self.path, self._on_disk() + recorded, as_json)
                    finished = False
                else:
                    raws = (self._on_disk() if raws is None else raws) + recorded
                    content, pieces = staged.write(partial, raws, as_json, known)
                    self._partial = None if pieces is None else (content, raws, pieces)
                    wrote_partial = self._in_partial = True
            if finished:  # a killed writer's temp file of the cassette: no one else replaces it
                self._partial, self._in_partial = None, False
                _temp_path(self.path).unlink(missing_ok=True)
                if wrote_partial or partial.exists():
                    staged.rename(partial, self.path)
            if files is None:
                staged.commit()

    def _read_partial(self, partial: Path, as_json: bool) -> tuple[list[dict] | None, list[str]]:
        """The partial file's interactions (None: there is none) and the text of those this
        cassette wrote there itself, if the file still holds just what it wrote (compared
        byte for byte: another process may have written it since)."""
        raw = _read_or_none(partial)
        if raw is None:
            return None, []
        if self._partial is not None and self._partial[0] == raw:
            return self._partial[1], self._partial[2]
        return parse_interactions(partial, raw, as_json), []

    def _on_disk(self) -> list[dict]:
        """What the cassette holds now (no unfinished recording is left), unless this is
        mode `all` and the cassette was written before the run began."""
        if self.mode == "all" and _mtime(self.path) < self.since:
            return []
        return _load_raw(self.path, missing_ok=True) or []


def _scrub_body(body: bytes, secrets: list[str]) -> str | bytes:
    text = _to_text(body)
    return scrub_text(text, secrets) if isinstance(text, str) else text


def _temp_path(path: Path) -> Path:
    # one fixed name per file, safe because every writer holds the cassette's lock; a
    # killed writer's temp file is overwritten or removed by the next one
    return path.with_name(f".{path.name}.tmp")


def write_cassette(path: Path, interactions: list[dict]) -> None:
    """Write a vcrpy cassette atomically: a reader sees the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.parent):
        _write(path, interactions, path.suffix == ".json")


class CassetteSaver:
    """Saves of cassettes off the event loop, in batches: one thread writes every save
    queued meanwhile, each folder's lock taken once per batch, each cassette written once
    per batch however many saves of it were queued (in the order they were asked for).

    A thread per save (`asyncio.to_thread`) took the lock, and with it two file creations,
    for every save: at a few hundred conversations in flight that cost more CPU than the
    HTTP calls.
    """

    def __init__(self) -> None:
        self._jobs: list[tuple[Cassette, list[dict], bool, Any]] = []
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def save(self, cassette: Cassette, finished: bool = True) -> asyncio.Future:
        """Queue `cassette.save(finished=...)`: what it recorded so far is taken now; the
        future is done once that is on disk (or holds the error the save raised)."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        recorded = cassette.take_recorded()
        with self._ready:
            if self._thread is None:
                self._thread = threading.Thread(target=self._drain, name="harness-saver",
                                                daemon=True)
                self._thread.start()
            self._jobs.append((cassette, recorded, finished, done))
            self._ready.notify()
        return done

    def close(self) -> None:
        """Write what is queued, then stop the thread (blocking)."""
        with self._ready:
            self._closed = True
            self._ready.notify()
        if self._thread is not None:
            self._thread.join()
        if "_writers" in self.__dict__:
            self._writers.shutdown()

    def _drain(self) -> None:
        while True:
            with self._ready:
                while not self._jobs and not self._closed:
                    self._ready.wait()
                jobs, self._jobs = self._jobs, []
                if not jobs:
                    return
            self._write_batch(jobs)
            del jobs  # its cassettes are not held while the thread waits for the next batch

    def _write_batch(self, jobs: list[tuple[Cassette, list[dict], bool, Any]]) -> None:
        # per cassette, its saves merged in order: one write; per folder, one lock
        merged: dict[int, list] = {}
        for cassette, recorded, finished, done in jobs:
            entry = merged.setdefault(id(cassette), [cassette, [], False, []])
            entry[1] += recorded
            entry[2] = entry[2] or finished
            entry[3].append(done)
        folders: dict[Path, list[list]] = {}
        for entry in merged.values():
            folders.setdefault(entry[0].path.parent, []).append(entry)
        outcomes: list[tuple[list, BaseException | None]] = []
        for folder, entries in folders.items():
            try:
                folder.mkdir(parents=True, exist_ok=True)
                lock = _locked(folder)
                lock.__enter__()
            except BaseException as exc:
                outcomes += [(entry, exc) for entry in entries]
                continue
            try:
                staged = [(entry, _Files()) for entry in entries]
                written = [(entry, files, _write_entry(entry, files))
                           for entry, files in staged]
                # the fsyncs of a batch at once: on a disk they overlap rather than queue
                ready = [files for _, files, error in written if error is None]
                sync = self._writers.map if len(ready) > 1 else map
                synced = iter(list(sync(_settled, [files.sync for files in ready])))
                for entry, files, error in written:
                    if error is None:
                        error = next(synced)
                    if error is None:
                        error = _settled(files.finish)
                    outcomes.append((entry, error))
            finally:
                lock.__exit__(None, None, None)
        _settle(outcomes)

    @functools.cached_property
    def _writers(self) -> concurrent.futures.ThreadPoolExecutor:
        return concurrent.futures.ThreadPoolExecutor(SAVE_THREADS, "harness-save")


def _write_entry(entry: list, files: _Files) -> BaseException | None:
    """Stage one cassette of a batch in `files`; the error, if it failed."""
    cassette, recorded, finished, _ = entry
    return _settled(lambda: cassette.write(recorded, finished, locked=True, files=files))


def _settled(step: Any) -> BaseException | None:
    """Run `step`; the exception it raised, if any."""
    try:
        step()
    except BaseException as exc:
        return exc
    return None


def _settle(outcomes: list[tuple[list, BaseException | None]]) -> None:
    """On the futures' loop, once per batch: wake who waits for a save; a failed one's
    recordings go back to the cassette, for its next save (as `Cassette.save` keeps them)."""
    def settle() -> None:
        for (cassette, recorded, _, waiting), error in outcomes:
            if error is not None:
                cassette.give_back(recorded)
            for done in waiting:
                if not done.done():
                    done.set_result(None) if error is None else done.set_exception(error)

    if outcomes:
        with contextlib.suppress(RuntimeError):  # the loop has closed: no one waits
            outcomes[0][0][3][0].get_loop().call_soon_threadsafe(settle)


class _Files:
    """Cassette files written in two steps: each to its temp file (`write`), then, once
    `commit` has fsynced every temp file, renamed into place in the order asked. A batch of
    saves writes all of its files first and fsyncs them together (`CassetteSaver`), so the
    threads that overlap the fsyncs run no Python but the call; a reader still sees the old
    file or the new, never half, and a failed step leaves the old files and no temp file.

    A temp file stays open from its write to its fsync: bytes through `os.write`, not a text
    file object, which cost five more system calls a save (each one a hand-over of the GIL
    between the saver thread and the event loop's)."""

    def __init__(self) -> None:
        self.temps: list[tuple[Path, Path, int]] = []  # (temp file, the file it becomes, fd)
        self.renames: list[tuple[Path, Path]] = []

    def write(self, path: Path, interactions: list[dict], as_json: bool,
              known: list[str] | tuple = ()) -> tuple[bytes, list[str] | None]:
        """Stage `interactions` as the cassette `path`; `known`: the text of the first of them
        as an earlier write gave it. The bytes staged, and the text of each interaction
        (None where they are not only plain JSON), for a next write of them and more."""
        data = {"interactions": interactions, "version": 1}
        pieces = _interaction_texts(interactions, known)
        fast = None if pieces is None else _joined(pieces)
        content = (_json_text(data, fast) if as_json else _yaml_text(data, fast)).encode("utf-8")
        tmp = _temp_path(path)
        try:
            fd = os.open(tmp, _WRITE_FLAGS, 0o666)
        except BaseException as exc:
            raise _write_error(exc, path) from None
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
        except BaseException as exc:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise _write_error(exc, path) from None
        self.temps.append((tmp, path, fd))
        self.renames.append((tmp, path))
        return content, pieces

    def rename(self, source: Path, target: Path) -> None:
        self.renames.append((source, target))

    def sync(self) -> None:
        """fsync and close every temp file; on a failure none is left."""
        for i, (tmp, path, fd) in enumerate(self.temps):
            try:
                os.fsync(fd)
            except BaseException as exc:
                self.discard()
                raise _write_error(exc, path) from None
            os.close(fd)
            self.temps[i] = (tmp, path, -1)  # closed: `discard` must not close it again

    def finish(self) -> None:
        """The renames, in order (after `sync`)."""
        for source, target in self.renames:
            try:
                os.replace(source, target)
            except BaseException as exc:
                self.discard()
                raise _write_error(exc, target) from None

    def commit(self) -> None:
        self.sync()
        self.finish()

    def discard(self) -> None:
        for tmp, _, fd in self.temps:
            if fd >= 0:
                os.close(fd)
            tmp.unlink(missing_ok=True)
        self.temps = [(tmp, path, -1) for tmp, path, _ in self.temps]


_WRITE_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
                | getattr(os, "O_BINARY", 0))


def _write_error(exc: BaseException, path: Path) -> BaseException:
    if isinstance(exc, OSError):
        return CassetteWriteError(
            exc.errno, f"{path}: cannot write the cassette: {exc.strerror or exc} "
                       "(what was recorded before is kept: run the same command again "
                       "once this is fixed)")
    return exc


def _write(path: Path, interactions: list[dict], as_json: bool) -> None:
    """Temp file + fsync + rename; the caller holds the lock. A failed write (a full disk)
    leaves the old file and no temp file, and says which file it could not write."""
    files = _Files()
    files.write(path, interactions, as_json)
    files.commit()


# Characters JSON leaves raw that a YAML 1.1 reader would reject (not printable) or fold
# (line breaks) inside a double-quoted scalar; escaped, they mean the same in both.
_YAML_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")
_SURROGATE = re.compile("[\ud800-\udfff]")  # JSON escapes them; libyaml refuses the escape
# a list holding one string, as header values are: on one line (strings hold no raw newline)
_ONE_STRING_LIST = re.compile(r'\[\n\s*("(?:[^"\\]|\\.)*")\n\s*\]')


def _json_text(data: dict, fast: str | None) -> str:
    """Indented JSON, header values on one line: readable in a diff. `fast`: that text as
    orjson wrote it (`_joined`), None for data that is not plain."""
    if fast is not None:
        return fast
    return _ONE_STRING_LIST.sub(r"[\1]", json.dumps(data, indent=2, ensure_ascii=False))


class _NotPlain(Exception):
    """A value orjson would write otherwise than json (a float: 1e-5 for 1e-05)."""


def _interaction_texts(interactions: list[dict], known: list[str] | tuple) -> list[str] | None:
    """Each interaction's text in its cassette as `_json_text` writes it, by orjson (~20x
    faster than json) with each one-string list handed to it already on one line; the
    first `len(known)` taken from `known`. None if one is not only dicts, lists, strings,
    ints and None, or orjson refuses it (a lone surrogate, an int past 64 bits, a key that
    is not a string). A conversation's cassette is saved after every turn: each save renders
    only the new interactions, where walking every header of every one again took most of it."""
    try:
        return [*known, *(orjson.dumps(_one_line_lists(raw), option=orjson.OPT_INDENT_2)
                          .decode("utf-8").replace("\n", "\n    ")  # strings hold no raw \n
                          for raw in interactions[len(known):])]
    except (_NotPlain, orjson.JSONEncodeError, TypeError):
        return None


def _joined(pieces: list[str]) -> str:
    """The text of a cassette whose interactions have these texts (`_interaction_texts`)."""
    if not pieces:
        return '{\n  "interactions": [],\n  "version": 1\n}'
    return '{\n  "interactions": [\n    ' + ",\n    ".join(pieces) + '\n  ],\n  "version": 1\n}'


def _one_line_lists(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return {k: _one_line_lists(v) for k, v in value.items()}
    if isinstance(value, list):
        if len(value) == 1 and isinstance(value[0], str):
            return orjson.Fragment(orjson.dumps(value))
        return [_one_line_lists(v) for v in value]
    if value is None or isinstance(value, int):
        return value
    raise _NotPlain


def _yaml_text(data: dict, fast: str | None) -> str:
    """A cassette as YAML in flow style that is also JSON.

    vcrpy and pytest-recording read it as any YAML; harness reads it as JSON, with a
    parser many times faster than libyaml. What JSON and YAML 1.1 would read differently
    (a float: `1e-05` is a string to YAML; a binary body) is written in block style, as
    vcrpy does.
    """
    text = fast  # None: not known to be plain yet
    if text is None and _json_is_yaml(data):
        text = _json_text(data, None)
    if text is not None and not _SURROGATE.search(text):
        return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return yaml.dump(data, Dumper=_Dumper, allow_unicode=True, width=100)


def _json_is_yaml(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_is_yaml(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_json_is_yaml(v) for v in value)
    return value is None or isinstance(value, str | int)  # bools are ints


# --- vcrpy / pytest-recording ------------------------------------------------------------------


def vcr_json_body_matcher(r1: Any, r2: Any) -> None:
    """A vcrpy matcher: bodies equal as canonical JSON (vcrpy's `body` compares bytes)."""
    b1, b2 = (_as_bytes(r.body) for r in (r1, r2))
    if canonical_body(b1) != canonical_body(b2):
        raise AssertionError("request bodies differ as JSON")


def vcr_config() -> dict[str, Any]:
    """Settings that make vcrpy / pytest-recording match and scrub the way harness does.

    In a conftest.py::

        @pytest.fixture(scope="module")
        def vcr_config():
            return harness.cassettes.vcr_config()

        def pytest_recording_configure(config, vcr):
            vcr.register_matcher("json_body", harness.cassettes.vcr_json_body_matcher)
    """
    return {
        "match_on": ["method", "host", "path", "json_body"],
        "filter_headers": [(h, SCRUBBED) for h in sorted(SECRET_HEADERS)],
        "filter_query_parameters": [(q, SCRUBBED) for q in sorted(SECRET_QUERY_PARAMS)],
        "decode_compressed_response": True,
    }
