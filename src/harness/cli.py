"""`python -m harness`: replay, compare, diff, report, providers, inspect, import, servers.

Bad input ends in one line on stderr (`harness: error: ...`) and exit code 2, never a
traceback; `diff` exits 1 when the runs differ.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from . import compare, results
from .cassettes import RECORD_MODES, CassetteError, MissingRecording, _safe_name, dataset_folder, scrub_text
from .datasets import DatasetError, load_dataset
from .foreign import add_commands as add_foreign_commands
from .providers import (
    PRESETS,
    Provider,
    ProviderConfigError,
    check_params,
    known_secrets,
    load_providers_file,
    resolve,
)
from .replay import HISTORY_MODES, replay

USER_PROVIDERS_FILE = "harness.toml"
MAX_CONCURRENCY = 1024


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""


def check_output(path: str | Path, reads: Iterable[str | Path | None] = (), *,
                 force: bool = True, flag: str = "--out") -> Path:
    """Refuse, as a UsageError, to write `path` when it is one of the files the command
    `reads`, lies under a file, is a folder, or (without `force`) already exists."""
    out = Path(path)
    target = out.resolve()
    for source in reads:
        if source is not None and (Path(source).resolve() == target or (
                out.exists() and Path(source).exists() and os.path.samefile(source, out))):
            raise UsageError(f"{flag} {path} is {source}, which this command reads "
                             "(expected another file)")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{flag} {path}: {parent} is a file, not a folder")
            break
    if out.is_dir():
        raise UsageError(f"{flag} {path} is a folder (expected a file name)")
    if not force and out.exists():
        raise UsageError(f"{flag} {path} exists (use --force to replace it)")
    return out


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}")
    return value


def _console(stderr: bool = False) -> Console:
    # the terminal's width, else $COLUMNS; piped into a file or a program without
    # either, 160 (the summary fits 80 whatever the width)
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=160 if wide else None)


def print_frame(frame: pd.DataFrame, title: str, console: Console, max_chars: int = 80,
                index: bool = False) -> None:
    """A DataFrame as a rich table: texts cut with "…", numbers never cut or folded."""
    table = Table(title=title, title_justify="left", box=None, padding=(0, 1), pad_edge=False,
                  header_style="bold")
    frame = frame.reset_index() if index else frame
    cells = [[_cell(v, max_chars) for v in row] for row in frame.itertuples(index=False)]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) or bool(cells) and all(
        _NUMBER.match(r[k]) for r in cells) for k, c in enumerate(frame.columns)]
    widths = _widths(frame.columns, cells, numeric, console.width)
    for k, column in enumerate(frame.columns):
        table.add_column(str(column), justify="right" if numeric[k] else "left", no_wrap=True,
                         overflow="ellipsis", width=widths[k])
    for row in cells:
        table.add_row(*row)
    console.print(table)


def _widths(columns, cells: list[list[str]], numeric: list[bool], total: int) -> list[int]:
    """Column widths that fit `total`: numbers keep their width, texts share what is left."""
    natural = [max([len(str(c)), *(len(r[k]) for r in cells)]) for k, c in enumerate(columns)]
    room = total - 2 * (len(natural) - 1)
    if sum(natural) <= room:
        return natural
    widths = list(natural)
    texts = [k for k, is_number in enumerate(numeric) if not is_number]
    left = room - sum(natural[k] for k in range(len(natural)) if numeric[k])
    for k in sorted(texts, key=lambda k: natural[k]):  # narrow texts first, whole if they fit
        share = max(3, left // max(1, len(texts)))
        widths[k] = min(natural[k], share)
        left -= widths[k]
        texts.remove(k)
    return widths


_NUMBER = re.compile(r"^(—|-?[\d.,]+[kMG]?)$")


def _cell(value: object, max_chars: int) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return "—"
    text = " ".join(str(value).split())
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def _compact(value: object) -> object:
    """12345 -> '12.3k': keeps the summary inside 80 columns."""
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return None
    number = float(value)  # type: ignore[arg-type]
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= limit * 10:
            return f"{number / limit:.0f}{suffix}"
        if abs(number) >= limit:
            return f"{number / limit:.1f}{suffix}"
    return f"{number:.0f}" if number == int(number) else f"{number:.1f}"


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per provider: turns, ok, errors, each finish reason, tokens, latency p50, cost."""
    usage = compare.usage(frame)
    reasons = compare.finish_reasons(frame).drop(columns=["error", "skipped"], errors="ignore")
    table = pd.DataFrame({"turns": usage["turns"], "ok": usage["ok"],
                          "err": usage["errors"] + usage["skipped"]}, index=usage.index)
    table = table.join(reasons)
    for column, name in (("input_tokens", "in tok"), ("output_tokens", "out tok"),
                         ("latency_p50_ms", "p50 ms")):
        if column in usage:
            table[name] = usage[column].map(_compact).astype("string")
    cost = usage["cost_usd"] if "cost_usd" in usage else (
        frame.groupby("provider", sort=False)["cost_usd"].sum(min_count=1)
        if "cost_usd" in frame else None)
    if cost is not None:
        table["cost $"] = cost.map(lambda v: None if pd.isna(v) else f"{v:.4g}").astype("string")
    return table


def print_summary(frame: pd.DataFrame, console: Console, title: str = "Summary") -> None:
    """The default output of `replay` and `compare`: one line per provider, fits 80 columns."""
    print_frame(summary(frame), title, console, index=True, max_chars=30)
    failed = frame[frame["status"] != "ok"]
    if len(failed):
        first = failed.iloc[0]
        console.print(_cell(f"{len(failed)} turns failed or were skipped; first: "
                            f"{first['conversation_id']} turn {first['turn']} {first['provider']}: "
                            f"{first['error']}", max(20, console.width)), overflow="ellipsis",
                      no_wrap=True, crop=True)


SHOW = ("summary", "replies", "all")


def print_report(frame: pd.DataFrame, console: Console, show: str = "summary") -> None:
    """What `replay` and `compare` print: the summary; the replies side by side on request."""
    if show in ("replies", "all"):
        wide = compare.side_by_side(frame).drop(columns=["reference"])
        print_frame(wide, "Replies, side by side", console, max_chars=60)
    if show == "all":
        print_frame(compare.finish_reasons(frame), "Finish reasons", console, index=True)
        print_frame(compare.usage(frame), "Token usage and latency", console, index=True)
    print_summary(frame, console)


FORMATS = ("table", "markdown", "csv", "json")


def _markdown(frame: pd.DataFrame) -> str:
    def text(v: object) -> str:
        return _cell(v, 10**6).replace("|", "\\|")
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(text(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def write_tables(tables: dict[str, pd.DataFrame], fmt: str, out=None) -> None:
    """Tables as markdown (a heading each), CSV (a `# title` line each) or one JSON object."""
    out = out or sys.stdout
    if fmt == "json":
        import json

        payload = {name: json.loads(t.to_json(orient="records", force_ascii=False))
                   for name, t in tables.items()}
        out.write(json.dumps(payload if len(tables) > 1 else next(iter(payload.values())),
                             ensure_ascii=False, indent=1) + "\n")
        return
    for k, (name, table) in enumerate(tables.items()):
        if fmt == "markdown":
            out.write(("\n" if k else "") + f"## {name}\n\n{_markdown(table)}\n")
        else:
            if len(tables) > 1:
                out.write(("\n" if k else "") + f"# {name}\n")
            table.to_csv(out, index=False, lineterminator="\n")


def _user_providers(path: str | None) -> dict[str, Provider]:
    if path:
        return load_providers_file(path)
    default = Path(USER_PROVIDERS_FILE)
    return load_providers_file(default) if default.exists() else {}


def _recorded_providers(cassette_dir: Path, dataset_name: str) -> list[str]:
    folder = dataset_folder(cassette_dir, dataset_name)
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def cmd_replay(args: argparse.Namespace) -> int:
    if args.out:
        results.check_format(args.out)
        check_output(args.out, [args.dataset, args.answers])
        check_output(f"{args.out}.journal.jsonl", [args.dataset, args.answers])
    if args.concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, got {args.concurrency}")
    if args.concurrency > MAX_CONCURRENCY:
        raise UsageError(f"--concurrency {args.concurrency} is too many "
                         f"(expected at most {MAX_CONCURRENCY} conversations at once)")
    dataset = load_dataset(args.dataset, answers=args.answers, limit=args.limit)
    extra = _user_providers(args.providers_file)
    names = args.provider or _recorded_providers(Path(args.cassettes), dataset.name)
    if not names:
        raise UsageError(
            f"no cassettes for {dataset.name!r} under {args.cassettes}/{dataset.name}/: "
            f"name providers with --provider (known: {', '.join(sorted({**PRESETS, **extra}))})"
        )
    providers = resolve(names, extra)
    params = {k: v for k, v in (("max_tokens", args.max_tokens), ("temperature", args.temperature),
                                ("seed", args.seed)) if v is not None}
    try:
        check_params(params, "--")
    except ValueError as exc:
        raise UsageError(str(exc).replace("--max_tokens", "--max-tokens")) from None
    console = _console()
    journal = Path(f"{args.out}.journal.jsonl") if args.out else None
    if journal is not None and journal.exists():
        console.print(f"resuming the unfinished run recorded in {journal}", style="yellow")
    frame = replay(
        dataset, providers, history=args.history, record_mode=args.record_mode,
        cassette_dir=args.cassettes, serializer=args.cassette_format, params=params,
        concurrency=args.concurrency, progress=not args.no_progress, journal=journal,
        timeout=args.timeout,
    )
    print_report(frame, console, args.show)
    if args.out:
        path = results.save(frame, args.out)
        console.print(f"wrote {len(frame)} rows to {path} (see them in a browser: "
                      f"harness view {path})", overflow="fold")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    frame = results.load(args.results)
    if args.format == "table":
        print_report(frame, _console(), args.show)
        return 0
    tables = {"summary": summary(frame).reset_index(),
              "finish_reasons": compare.finish_reasons(frame).reset_index(),
              "usage": compare.usage(frame).reset_index()}
    if args.show in ("replies", "all"):
        tables["replies"] = compare.side_by_side(frame)
    write_tables(tables, args.format)
    return 0


def _tolerance(items: Sequence[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise UsageError(f"--tolerance {item}: expected COLUMN=NUMBER, e.g. tokens=5") from None
    return out


def cmd_diff(args: argparse.Namespace) -> int:
    unknown = [c for c in args.ignore if c not in compare.DIFF_COLUMNS]
    if unknown:
        raise UsageError(f"--ignore {unknown[0]}: not a compared column "
                         f"(expected one of {', '.join(compare.DIFF_COLUMNS)})")
    if args.junit_xml:
        check_output(args.junit_xml, [args.baseline, args.current], flag="--junit-xml")
    before, after = results.load(args.baseline), results.load(args.current)
    changes = compare.diff(before, after, ignore=tuple(args.ignore),
                           tolerance=_tolerance(args.tolerance))
    if args.junit_xml:
        from .junit import write_junit

        write_junit(changes, after, before, args.junit_xml, suite=f"harness diff {args.baseline}")
    if args.format != "table":
        write_tables({"changes": changes}, args.format)
        return 1 if len(changes) else 0
    console = _console()
    if changes.empty:
        console.print(f"no changes: {len(after)} rows match {args.baseline}")
        return 0
    shown = changes[[c for c in ("conversation_id", "turn", "provider", "change",
                                 "response_before", "response_after", "finish_reason_before",
                                 "finish_reason_after", "output_tokens_before",
                                 "output_tokens_after") if c in changes.columns]]
    print_frame(shown, f"{len(changes)} changed rows", console, max_chars=50)
    return 1


def cmd_view(args: argparse.Namespace) -> int:
    from .view import write_view

    out = check_output(args.out, [*args.results, args.baseline], force=args.force,
                       flag=args.out_flag)
    runs = [(name, results.load(name)) for name in args.results]
    baseline = results.load(args.baseline) if args.baseline else None
    title = args.title or "harness view"
    path = write_view(runs, out, baseline=baseline, title=title)
    _console().print(f"wrote {path} ({path.stat().st_size // 1024} KiB): open it in a browser")
    return 0


def cmd_providers(args: argparse.Namespace) -> int:
    extra = _user_providers(args.providers_file)
    cassette_dir = Path(args.cassettes)
    rows = []
    for name, provider in {**PRESETS, **extra}.items():
        recorded = sorted(d.parent.name for d in cassette_dir.glob(f"*/{_safe_name(name)}")
                          if d.is_dir())
        rows.append({
            "provider": name,
            "protocol": provider.protocol,
            "model": provider.model,
            "url": provider.display_url,
            "key": "—" if not provider.api_key_env else (
                f"{provider.api_key_env} set" if provider.api_key() else
                f"{provider.api_key_env} missing"),
            "cassettes": ", ".join(recorded) or "—",
        })
    print_frame(pd.DataFrame(rows), "Providers", _console(), max_chars=70)
    return 0


def cmd_serve_stub(args: argparse.Namespace) -> int:
    from .stub_server import serve

    return serve(args.port, args.fault_rate, args.seed, args.delay)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"harness: error: {message} (see {self.prog} --help)\n")


def cmd_serve_local(args: argparse.Namespace) -> int:
    from .local import serve

    return serve(args.model, args.port, args.threads, args.ctx_size, parallel=args.parallel)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="harness",
        description="Replay multi-turn chat datasets against LLM providers and compare them.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--cassettes", default="cassettes", metavar="DIR",
                       help="cassette folder (default: cassettes)")
        p.add_argument("--providers-file", metavar="TOML",
                       help="extra providers, [providers.NAME] tables "
                            f"(default: ./{USER_PROVIDERS_FILE} if present)")
        return p

    p = with_common(sub.add_parser("replay", help="replay a dataset against providers"))
    p.add_argument("dataset", help="JSONL or JSON dataset")
    p.add_argument("--provider", "-p", action="append", metavar="NAME",
                   help="provider to replay against (repeatable; default: every provider "
                        "with cassettes for this dataset)")
    p.add_argument("--record-mode", choices=RECORD_MODES, default="none",
                   help="none: offline from cassettes (default); once: record what is missing; "
                        "new_episodes: record new requests; all: re-record everything")
    p.add_argument("--history", choices=HISTORY_MODES, default="auto",
                   help="earlier assistant turns: the dataset's (reference), the provider's "
                        "own (self), or the dataset's where it has them (auto, default)")
    p.add_argument("--cassette-format", choices=("yaml", "json"), default="yaml",
                   help="cassette files as vcrpy YAML (default) or vcrpy JSON (faster at scale)")
    p.add_argument("--answers", metavar="FILE", help="FastChat answer file for MT-Bench questions")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N conversations")
    p.add_argument("--max-tokens", type=int, metavar="N")
    p.add_argument("--temperature", type=float, metavar="T")
    p.add_argument("--seed", type=int, metavar="S")
    p.add_argument("--concurrency", type=int, default=4, metavar="N",
                   help=f"conversations in flight at once (default 4, at most {MAX_CONCURRENCY})")
    p.add_argument("--timeout", type=_timeout, default=120.0, metavar="SECONDS",
                   help="per-request HTTP timeout (default 120)")
    p.add_argument("--out", "-o", metavar="FILE",
                   help="write results (.parquet, .csv, .jsonl); rows are journaled to "
                        "FILE.journal.jsonl as they complete, and the same command run again "
                        "after a crash resumes from it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--show", choices=SHOW, default="summary",
                   help="summary: one line per provider (default); replies: also the replies "
                        "side by side; all: also the full usage tables")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("compare", help="print the comparison tables of a results file")
    p.add_argument("results")
    p.add_argument("--show", choices=SHOW, default="summary",
                   help="summary (default), replies (side by side too) or all")
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="table for the terminal (default), or markdown, csv, json")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("diff", help="what changed between two results files (exit 1 if any)")
    p.add_argument("baseline")
    p.add_argument("current")
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="table for the terminal (default), or markdown, csv, json")
    p.add_argument("--ignore", action="append", default=[], metavar="COLUMN",
                   help=f"leave a column out of the comparison (one of {', '.join(compare.DIFF_COLUMNS)})")
    p.add_argument("--tolerance", action="append", default=[], metavar="COLUMN=N",
                   help="count a numeric change of at most N as none; tokens=N for every token count")
    p.add_argument("--junit-xml", metavar="FILE",
                   help="also write a JUnit XML report: one test case per row, drifted rows failed")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("view", help="write one self-contained HTML page to explore results in "
                                    "a browser (search, filters, threads, diff, charts)")
    p.add_argument("results", nargs="+", help="results files; several give a switch between runs")
    p.add_argument("--baseline", metavar="RESULTS", help="highlight what changed against this run")
    p.add_argument("--out", "-o", default="view.html", metavar="FILE",
                   help="where to write the page (default: view.html)")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p.add_argument("--title")
    p.set_defaults(func=cmd_view, out_flag="--out")

    p = sub.add_parser("report", help="the `view` page of one results file (kept for old scripts)")
    p.add_argument("results", nargs=1)
    p.add_argument("--html", dest="out", required=True, metavar="FILE", help="where to write the page")
    p.add_argument("--baseline", metavar="RESULTS", help="also show what changed against this run")
    p.add_argument("--force", action="store_true", help="replace --html if it exists")
    p.add_argument("--title")
    p.set_defaults(func=cmd_view, out_flag="--html")

    p = with_common(sub.add_parser("providers", help="list providers, keys and cassettes"))
    p.set_defaults(func=cmd_providers)

    add_foreign_commands(sub)  # inspect, import

    p = sub.add_parser("serve-local", help="run a real small model (llama.cpp) on 127.0.0.1")
    p.add_argument("--model", choices=("smollm2", "gemma3"), default="smollm2",
                   help="smollm2: SmolLM2-135M-Instruct (chat); gemma3: Gemma 3 270M (base)")
    p.add_argument("--port", type=int, help="default: the port of the local-MODEL preset")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ctx-size", type=int, default=4096, help="context tokens per slot")
    p.add_argument("--parallel", type=int, default=1, help="request slots served at once")
    p.set_defaults(func=cmd_serve_local)

    p = sub.add_parser("serve-stub", help="run the deterministic stub server on 127.0.0.1")
    p.add_argument("--port", type=int, default=8099)
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--delay", type=float, default=0.0, help="seconds to wait before each answer")
    p.set_defaults(func=cmd_serve_stub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, DatasetError, ProviderConfigError, MissingRecording, CassetteError,
            ValueError, OSError) as exc:
        if isinstance(exc, OSError) and exc.strerror:  # e.g. ENOSPC: name the file if known
            message = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
        else:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"harness: error: {scrub_text(message, known_secrets())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130
