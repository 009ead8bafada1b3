"""Providers: a named target = wire protocol + base URL + model + API key + default params.

Each wire protocol is one module here owning all of that protocol's JSON, as pure functions::

    build_request(messages, params, tools=()) -> dict  # the JSON body to POST
    parse_request(body) -> list[Message]               # its inverse (what `import` reads)
    parse_tools(body) -> tuple[Tool, ...]              # the tools a request body offers
    parse_response(status, headers, body) -> Reply     # body is the raw (decoded) bytes

and a `PATH` appended to the provider's base URL (`{model}` in it is the provider's model;
a `STREAM_PATH` is used instead when the params ask for `stream`). For streams, each also has
`stream_request(body)` (the body asking for a stream), `token_kind(event)` (whether a stream
event carries output: `content`, `reasoning` or None), `STREAM_NDJSON` (its framing) and
`stream_response(reply)` (the stream the stub and the bridge send). Nothing else knows a
provider's JSON.
"""

from __future__ import annotations

import base64
import functools
import importlib
import math
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ._common import encode_body as encode_body  # public: the bytes a body is sent as

PROTOCOLS = {
    "openai": "openai",
    "cohere-v1": "cohere_v1",
    "cohere-v2": "cohere_v2",
    "anthropic": "anthropic",
    "gemini": "gemini",
}


class ProviderConfigError(ValueError):
    """A provider that cannot be used as configured (unknown name, bad TOML, missing key)."""


# a header, param or query parameter whose name says its value is a credential
_SECRET_NAME = re.compile(r"key|token|secret|auth|passw|cookie|session|credential|signature",
                          re.IGNORECASE)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name (RFC 9110 token)
_BAD_HOST = re.compile(r"[\x00-\x20\x7f/\\?#@]")


def is_secret_name(name: str) -> bool:
    """Whether a header, param or query parameter of this name carries a credential."""
    return bool(_SECRET_NAME.search(name))


def join_url(base_url: str, path: str) -> str:
    """`path` appended to the path of `base_url`, its query (e.g. `?key=`) kept after it."""
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + path))


def _check_base_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url must be an http:// or https:// URL, got {_redact(value)!r}")
    host, hostname = parts.netloc.rpartition("@")[2], parts.hostname
    if not hostname or _BAD_HOST.search(hostname):
        raise ValueError(f"base_url host {hostname or ''!r} is not a host name (no spaces, control "
                         "characters or separators)")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        port_text = host.rpartition(":")[2]
        raise ValueError(f"base_url port {port_text!r} is not a port (expected 1-65535)")
    return value


def _redact(url: str) -> str:
    """A URL fit for a message: userinfo and key-like query values replaced."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<an unparsable URL>"
    netloc = parts.netloc.rpartition("@")[2]
    if "@" in parts.netloc:
        netloc = "<scrubbed>@" + netloc
    query = "&".join(f"{k}=<scrubbed>" if is_secret_name(k) else f"{k}={v}"
                     for k, v in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit(parts._replace(netloc=netloc, query=query))


_POSITIVE_INTS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "n", "top_k")
_NON_NEGATIVE = ("temperature", "top_p", "min_p", "repetition_penalty")


def check_params(params: Mapping[str, Any], prefix: str = "") -> None:
    """ValueError naming `PREFIXNAME` for a param no API accepts: NaN or infinite numbers,
    a `max_tokens` that is not a positive integer, a negative temperature or top_p."""
    for name, value in params.items():
        where = f"{prefix}{name}"
        _check_finite(value, where)
        if name in _POSITIVE_INTS and value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{where}: expected a positive integer, got {value!r}")
        if name in _NON_NEGATIVE and value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
            raise ValueError(f"{where}: expected a number >= 0, got {value!r}")
        if name == "seed" and value is not None and (
                isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{where}: expected an integer, got {value!r}")


def _check_finite(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_finite(v, f"{where}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_finite(v, f"{where}[{i}]")


@functools.cache
def protocol_module(protocol: str) -> ModuleType:
    """The adapter module of a wire protocol."""
    if protocol not in PROTOCOLS:
        known = ", ".join(PROTOCOLS)
        raise ProviderConfigError(f"unknown protocol {protocol!r} (expected one of: {known})")
    return importlib.import_module(f"harness.providers.{PROTOCOLS[protocol]}")


class Provider(BaseModel):
    """A named chat endpoint. `params` are defaults merged under each run's params."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    protocol: str
    base_url: str
    model: str
    api_key_env: str | None = None
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"
    headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    rate_limit: float | None = Field(default=None, description="requests per minute")
    token_limit: float | None = Field(default=None, description="tokens per minute")
    description: str = ""
    prices: dict[str, float] | None = Field(default=None, description="$ per million tokens")

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, value: str) -> str:
        protocol_module(value)
        return value

    @field_validator("api_key_env")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _check_base_url(value).rstrip("/")

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP header name "
                                 "(no spaces, colons, CR or LF)")
            if re.search(r"[\r\n\x00]", text):
                raise ValueError(f"header {name!r}: the value holds CR, LF or NUL")
        return value

    @field_validator("params")
    @classmethod
    def _valid_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_params(value)
        return value

    @field_validator("rate_limit")
    @classmethod
    def _positive_rate(cls, value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"expected requests per minute > 0, got {value!r}")
        return value

    @field_validator("token_limit")
    @classmethod
    def _positive_tokens(cls, value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"expected tokens per minute > 0, got {value!r}")
        return value

    @field_validator("prices")
    @classmethod
    def _known_prices(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        fields = ("input_per_mtok", "output_per_mtok", "cached_input_per_mtok", "cache_write_per_mtok")
        unknown = [k for k in value if k not in fields]
        if unknown:
            raise ValueError(f"unknown price {unknown[0]!r} (expected: {', '.join(fields)})")
        missing = [k for k in fields[:2] if k not in value]
        if missing:
            raise ValueError(f"{missing[0]} is required")
        negative = [k for k, v in value.items() if v < 0]
        if negative:
            raise ValueError(f"{negative[0]} must be 0 or more, got {value[negative[0]]}")
        return value

    @property
    def adapter(self) -> ModuleType:
        return protocol_module(self.protocol)

    @property
    def url(self) -> str:
        return self.endpoint(bool(self.params.get("stream")))

    def endpoint(self, stream: bool = False) -> str:
        """The URL requests are POSTed to; `stream`: the protocol's streaming one, if it has one."""
        path = self.adapter.PATH
        if stream and hasattr(self.adapter, "STREAM_PATH"):
            path = self.adapter.STREAM_PATH
        path, _, query = path.format(model=self.model).partition("?")
        url = urlsplit(join_url(self.base_url, path))
        return urlunsplit(url._replace(query="&".join(q for q in (query, url.query) if q)))

    @property
    def display_url(self) -> str:
        """`url` fit to print: credentials in it replaced."""
        return _redact(self.url)

    def secrets(self) -> list[str]:
        """Every credential this provider knows: its key, key-like headers, params and URL parts."""
        found = [self.api_key()]
        for name, value in self.headers.items():
            if is_secret_name(name) or name.lower() in ("api-key", "cookie"):
                found += [value, value.partition(" ")[2]]
        found += [v for k, v in self.params.items() if is_secret_name(k) and isinstance(v, str)]
        parts = urlsplit(self.base_url)
        if parts.password or parts.username:
            userinfo = parts.netloc.rpartition("@")[0]
            found += [userinfo, unquote(userinfo), unquote(parts.password or ""),
                      base64.b64encode(unquote(userinfo).encode()).decode()]
        found += [v for k, v in parse_qsl(parts.query) if is_secret_name(k)]
        return [s for s in found if s]

    def api_key(self) -> str | None:
        """The key from the environment, or None when this provider needs none or it is unset."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def request_headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"content-type": "application/json", **self.headers}
        if api_key:
            scheme = f"{self.auth_scheme} " if self.auth_scheme else ""
            headers[self.auth_header] = scheme + api_key
        return headers

    def build_body(self, messages: list, params: Mapping[str, Any] | None = None,
                   tools: tuple = (), stream: bool = False) -> dict:
        merged = {**self.params, **(params or {}), "model": self.model}
        body = self.adapter.build_request(messages, merged, tools)
        return self.adapter.stream_request(body) if stream else body


def _openai_compatible(name: str, base_url: str, model: str, key: str | None, **kw) -> Provider:
    return Provider(
        name=name, protocol="openai", base_url=base_url, model=model, api_key_env=key, **kw
    )


PRESETS: dict[str, Provider] = {
    p.name: p
    for p in [
        _openai_compatible(
            "together", "https://api.together.xyz/v1",
            "meta-llama/Llama-3.3-70B-Instruct-Turbo", "TOGETHER_API_KEY",
            description="Together AI (OpenAI-compatible)",
        ),
        _openai_compatible(
            "assemblyai", "https://llm-gateway.assemblyai.com/v1",
            "claude-sonnet-4-5-20250929", "ASSEMBLYAI_API_KEY", auth_scheme="",
            description="AssemblyAI LLM Gateway (OpenAI-compatible, bare key in Authorization)",
        ),
        _openai_compatible(
            "openai", "https://api.openai.com/v1", "gpt-4o-mini", "OPENAI_API_KEY",
            description="OpenAI chat completions",
        ),
        _openai_compatible(
            "groq", "https://api.groq.com/openai/v1", "llama-3.3-70b-versatile", "GROQ_API_KEY",
            description="Groq (OpenAI-compatible)",
        ),
        _openai_compatible(
            "mistral", "https://api.mistral.ai/v1", "mistral-small-latest", "MISTRAL_API_KEY",
            description="Mistral (OpenAI-compatible)",
        ),
        _openai_compatible(
            "openrouter", "https://openrouter.ai/api/v1", "openai/gpt-4o-mini",
            "OPENROUTER_API_KEY", description="OpenRouter (OpenAI-compatible)",
        ),
        Provider(
            name="cohere", protocol="cohere-v2", base_url="https://api.cohere.com/v2",
            model="command-a-03-2025", api_key_env="CO_API_KEY",
            description="Cohere Chat v2 (messages)",
        ),
        Provider(
            name="cohere-v1", protocol="cohere-v1", base_url="https://api.cohere.com/v1",
            model="command-r-plus-08-2024", api_key_env="CO_API_KEY",
            description="Cohere Chat v1 (message + chat_history)",
        ),
        Provider(
            name="anthropic", protocol="anthropic", base_url="https://api.anthropic.com/v1",
            model="claude-haiku-4-5", api_key_env="ANTHROPIC_API_KEY",
            auth_header="x-api-key", auth_scheme="", headers={"anthropic-version": "2023-06-01"},
            params={"max_tokens": 1024}, description="Anthropic Messages",
        ),
        Provider(
            name="gemini", protocol="gemini",
            base_url="https://generativelanguage.googleapis.com/v1beta", model="gemini-2.5-flash",
            api_key_env="GEMINI_API_KEY", auth_header="x-goog-api-key", auth_scheme="",
            description="Google Gemini generateContent",
        ),
        _openai_compatible(
            "local", os.environ.get("HARNESS_LOCAL_URL", "http://127.0.0.1:8080/v1"), "local",
            None, description="Any OpenAI-compatible server on this machine (HARNESS_LOCAL_URL)",
        ),
        _openai_compatible(
            "local-smollm2", os.environ.get("HARNESS_SMOLLM2_URL", "http://127.0.0.1:8081/v1"),
            "smollm2-135m-instruct-q4_1", None,
            params={"temperature": 0, "seed": 42, "cache_prompt": False, "max_tokens": 128},
            description="SmolLM2-135M-Instruct on llama.cpp: python -m harness serve-local "
                        "--model smollm2 (HARNESS_SMOLLM2_URL)",
        ),
        _openai_compatible(
            "local-gemma3", os.environ.get("HARNESS_GEMMA3_URL", "http://127.0.0.1:8082/v1"),
            "gemma-3-270m-q4_k_m", None,
            params={"temperature": 0, "seed": 42, "cache_prompt": False, "max_tokens": 128},
            description="Gemma 3 270M base model on llama.cpp, no chat template (runs to "
                        "max_tokens): python -m harness serve-local --model gemma3 (HARNESS_GEMMA3_URL)",
        ),
    ]
}


def load_providers_file(path: str | Path) -> dict[str, Provider]:
    """Providers from a TOML file with `[providers.NAME]` tables (protocol, base_url, model...)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ProviderConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProviderConfigError(f"{path}: invalid TOML: {exc}") from None
    tables = data.get("providers")
    if not isinstance(tables, dict) or not tables:
        raise ProviderConfigError(f"{path}: expected [providers.NAME] tables")
    providers = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ProviderConfigError(f"{path}: providers.{name}: expected a table")
        base = None
        if "preset" in table:
            base = PRESETS.get(table["preset"])
            if base is None:
                raise ProviderConfigError(
                    f"{path}: providers.{name}.preset: unknown preset {table['preset']!r} "
                    f"(expected one of: {', '.join(PRESETS)})"
                )
        fields = {**(base.model_dump() if base else {}), **table, "name": name}
        fields.pop("preset", None)
        try:
            providers[name] = Provider(**fields)
        except ValidationError as exc:
            # a misspelt key explains the "field required" that follows it: name it first
            errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
            err = errors[0]
            where = ".".join(str(p) for p in err["loc"]) or "table"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown field (expected: preset, {', '.join(Provider.model_fields)})"
            raise ProviderConfigError(f"{path}: providers.{name}.{where}: {msg}") from None
    _LOADED.update(providers)
    return providers


_LOADED: dict[str, Provider] = {}  # every provider this process read: whose secrets to scrub


def known_secrets(providers: Iterable[Provider] = ()) -> list[str]:
    """Every credential this process knows (of `providers`, every preset's key and every
    provider file read), URL-encoded forms too, longest first."""
    found: set[str] = set()
    for provider in [*PRESETS.values(), *_LOADED.values(), *providers]:
        for secret in provider.secrets():
            found |= {secret, quote(secret, safe="")}
    return sorted(found, key=lambda s: (-len(s), s))


def resolve(names: list[str], extra: Mapping[str, Provider] | None = None) -> list[Provider]:
    """Look providers up by name among the presets and any user-defined ones."""
    known = {**PRESETS, **(extra or {})}
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ProviderConfigError(f"provider {twice[0]!r} is named more than once "
                                  "(expected each --provider once)")
    out = []
    for name in names:
        if name not in known:
            raise ProviderConfigError(
                f"unknown provider {name!r} (known: {', '.join(sorted(known))})"
            )
        out.append(known[name])
    return out
