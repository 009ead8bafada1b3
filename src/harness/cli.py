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
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from . import compare, costs, foreign, results, scores
from .cassettes import (
    RECORD_MODES,
    CassetteError,
    MissingRecording,
    _safe_name,
    recorded_providers,
    scrub_text,
)
from .datasets import DatasetError, load_dataset
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
                  header_style="bold", min_width=min(len(title), console.width))  # title: 1 line
    frame = frame.reset_index() if index else frame
    cells = [[_cell(v, max_chars) for v in row] for row in frame.itertuples(index=False)]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) or bool(cells) and all(
        _NUMBER.match(r[k]) for r in cells) for k, c in enumerate(frame.columns)]
    widths = _widths(frame.columns, cells, numeric, console.width)
    for k, column in enumerate(frame.columns):
        if str(column) in NAME_COLUMNS:  # names differ at their ends: cut them in the middle
            for row in cells:
                row[k] = _middle(row[k], widths[k])
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


# provider names such as local-smollm2-cohere-v1 / -v2 share their start
NAME_COLUMNS = frozenset({"provider", "a", "b", "provider_a", "provider_b"})


def _middle(text: str, width: int) -> str:
    """`text` cut to `width` with "…" in the middle, so both its ends stay readable."""
    if len(text) <= width or width < 5:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


_NUMBER = re.compile(r"^(—|-?[\d.,]+[kMG]?)$")


def _cell(value: object, max_chars: int) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return "—"
    text = " ".join(str(value).split())
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


SHORT_NAMES = {
    "input_tokens": "in", "output_tokens": "out", "total_tokens": "total",
    "cached_input_tokens": "cached in", "cache_write_input_tokens": "cache write",
    "reasoning_tokens": "reasoning",
    "billed_input_tokens": "billed in", "billed_output_tokens": "billed out",
    "mean_output_tokens": "mean out", "latency_p50_ms": "p50 ms", "latency_p95_ms": "p95 ms",
    "ttft_p50_ms": "ttft p50", "ttft_p95_ms": "ttft p95", "ttfb_p50_ms": "ttfb p50",
    "ttfb_p95_ms": "ttfb p95", "itl_p50_ms": "itl p50", "itl_p95_ms": "itl p95",
    "output_tokens_per_s_p50": "tok/s p50", "output_tokens_per_s_p95": "tok/s p95",
    "cost_usd": "$ total", "cost_per_turn_usd": "$/turn", "cost_per_1k_turns_usd": "$/1k turns",
}


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
                         ("latency_p50_ms", "p50 ms"), ("ttft_p50_ms", "ttft ms")):
        if column in usage:
            table[name] = usage[column].map(_compact).astype("string")
    cost = usage["cost_usd"] if "cost_usd" in usage else (
        frame.groupby("provider", sort=False, observed=True)["cost_usd"].sum(min_count=1)
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


def print_report(frame: pd.DataFrame, console: Console, show: str = "summary",
                 providers: dict[str, Provider] | None = None) -> None:
    """What `replay` and `compare` print: the summary (with tool-call matches and scores where
    the results have them, and why any cost is $0 or NA); the replies side by side on request."""
    if show in ("replies", "all"):
        wide = compare.side_by_side(frame).drop(columns=["reference"])
        print_frame(wide, "Replies, side by side", console, max_chars=60)
    if show == "all":
        print_frame(compare.finish_reasons(frame), "Finish reasons", console, index=True)
        usage = compare.usage(frame).rename(columns=lambda c: SHORT_NAMES.get(c, c))
        print_frame(usage, "Token usage and latency", console, index=True)
    if frame["reference_tool_calls"].notna().any():
        print_frame(compare.tool_calls(frame), "Tool calls against the dataset's", console,
                    index=True)
    scored = [c for c in frame.columns if c in scores.SCORERS or c.startswith("judge_")]
    if scored:
        print_frame(compare.score_table(frame, scored), "Scores, mean per provider", console,
                    index=True)
    print_summary(frame, console)
    if line := timing_line(frame):
        console.print(line, highlight=False)
    for line in costs.unpriced_summary(frame, providers):
        console.print(line, highlight=False)


def timing_line(frame: pd.DataFrame) -> str | None:
    """Where a streamed run's timings come from: measured now, or read from the cassettes."""
    counts = (frame.attrs.get("run") or {}).get("timing") or {}
    recorded, live = counts.get("recorded", 0), counts.get("live", 0)
    if not recorded:
        return None
    return (f"stream timings: {recorded} turns read from the cassettes, not measured now"
            + (f"; {live} measured by this run" if live else ""))


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


def _concurrency(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, got {text!r}") from None


def cmd_replay(args: argparse.Namespace) -> int:
    if args.out:
        results.check_format(args.out)
        check_output(args.out, [args.dataset, args.answers, args.tools])
        check_output(f"{args.out}.journal.jsonl", [args.dataset, args.answers, args.tools])
    if args.concurrency != "auto" and args.concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, got {args.concurrency}")
    if args.concurrency != "auto" and args.concurrency > MAX_CONCURRENCY:
        raise UsageError(f"--concurrency {args.concurrency} is too many "
                         f"(expected at most {MAX_CONCURRENCY} conversations at once)")
    streamed = bool(args.out) and results.check_format(args.out) == ".parquet"  # as replay does
    dataset = load_dataset(args.dataset, answers=args.answers, limit=args.limit, tools=args.tools,
                           lazy=streamed)  # rows streamed to --out: conversations built as taken
    extra = _user_providers(args.providers_file)
    names = args.provider or recorded_providers(args.cassettes, dataset.name)
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
    client = _dask_client(args)
    if journal is not None and journal.exists():
        console.print(f"resuming the unfinished run recorded in {journal}", style="yellow")
    finished: list[results.TurnResult] = []
    count = [0]  # a .parquet --out streams its rows: they are counted here, not held

    def counted(_: results.TurnResult) -> None:
        count[0] += 1

    try:
        frame = replay(
            dataset, providers, history=args.history, record_mode=args.record_mode,
            cassette_dir=args.cassettes, serializer=args.cassette_format, params=params,
            concurrency=args.concurrency, progress=not args.no_progress, journal=journal,
            on_row=counted if streamed else finished.append, keep_journal=True,
            started_at=_process_start(), timeout=args.timeout, stream=args.stream,
            out=args.out, **({"client": client} if client is not None else {}),
        )
    except KeyboardInterrupt:
        total = sum(dataset.turn_counts()) * len(providers)
        if streamed:  # the library left the rows that finished in --out
            return _interrupted(args, None, total, journal, count[0])
        frame = results.to_frame(finished, order=dataset.ids(), providers=[p.name for p in providers])
        return _interrupted(args, frame, total, journal)
    finally:
        _close_dask(client)
    if streamed and args.show != "summary":  # the replies: every column, read back
        frame = results.load(args.out)
    print_report(frame, console, args.show, {p.name: p for p in providers})
    if args.out:
        journal.unlink(missing_ok=True)  # only now: a failed save can still be resumed
        console.print(f"wrote {len(frame)} rows to {args.out} (see them in a browser: "
                      f"harness view {args.out})", overflow="fold")
    return 0


def _dask_client(args: argparse.Namespace) -> Any:
    """The Dask client `--workers` or `--scheduler` asks for, or None: one process."""
    if args.workers is None and args.scheduler is None:
        return None
    from .distributed_replay import DaskMissing, connect, local_cluster

    if args.workers is not None and args.scheduler is not None:
        raise UsageError("--workers and --scheduler exclude each other (expected one of them)")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    try:
        if args.workers is not None:
            return local_cluster(args.workers)
        if not re.fullmatch(r"(tcp|tls)://[^\s/]+:\d+", args.scheduler):
            raise UsageError(f"--scheduler {args.scheduler}: expected tcp://HOST:PORT")
        return connect(args.scheduler)
    except DaskMissing as exc:
        raise UsageError(str(exc)) from None
    except (OSError, TimeoutError) as exc:
        raise UsageError(f"--scheduler {args.scheduler}: cannot reach the Dask scheduler "
                         f"({type(exc).__name__}; expected a running one at tcp://HOST:PORT)"
                         ) from None


def _close_dask(client: Any) -> None:
    if client is not None:
        cluster = getattr(client, "cluster", None)  # the LocalCluster --workers started
        client.close()
        if cluster is not None:
            cluster.close()


def _process_start() -> float:
    """When this command was launched (Linux: from /proc), else now: what `--record-mode all`
    recorded before it is replaced, what another process records after it is kept."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


def _interrupted(args: argparse.Namespace, finished: pd.DataFrame | None, total: int,
                 journal: Path | None, written: int = 0) -> int:
    """Ctrl-C: keep the rows that finished (with --out) and say, in one line, how to go on.
    `finished` None: the replay wrote them (`written`) to a .parquet --out itself."""
    kept = written if finished is None else len(finished)
    done = f"{kept} of {total} turns"
    if args.out and kept:
        if finished is not None:
            results.save(finished, args.out)
        where = f"wrote the {done} that finished to {args.out}, the journal {journal} keeps them"
    else:
        where = f"{done} finished; what was recorded is kept under {args.cassettes}"
    print(f"harness: interrupted: {where}; run the same command again to resume",
          file=sys.stderr)
    return 130


def cmd_compare(args: argparse.Namespace) -> int:
    from . import verdicts

    is_verdicts = verdicts.is_verdict_table(args.results)
    if args.metric == "winner" or (is_verdicts and not args.metric):
        return _print_win_rates(args, [args.results] if is_verdicts else None)
    if is_verdicts:
        raise UsageError(f"{args.results} is a judge verdict table: its metric is winner "
                         f"(expected --metric winner, or a results file for --metric {args.metric})")
    extra = _user_providers(args.providers_file)
    frame = results.load(args.results, extra)
    if args.metric:
        return _print_significance(frame, args.metric, args.seed, args.format)
    if args.format == "table":
        console = _console()
        print_report(frame, console, args.show, extra)
        if beside := verdicts.beside(args.results):
            console.print(f"{len(beside)} judge verdict table{'s' * (len(beside) > 1)} beside "
                          "it: harness compare "
                          f"{args.results} --metric winner", highlight=False, markup=False)
        return 0
    tables = {"summary": summary(frame).reset_index(),
              "finish_reasons": compare.finish_reasons(frame).reset_index(),
              "usage": compare.usage(frame).reset_index()}
    if args.show in ("replies", "all"):
        tables["replies"] = compare.side_by_side(frame)
    write_tables(tables, args.format)
    return 0


def _print_significance(frame: pd.DataFrame, metric: str, seed: int, fmt: str = "table") -> int:
    """`compare --metric`: intervals per provider and per pair, and what they mean."""
    out = compare.significance(frame, metric, seed=seed)
    if fmt != "table":
        write_tables({name: table.reset_index() if name != "pairs" else table
                      for name, table in out.items()}, fmt)
        return 0
    console = _console()
    print_frame(out["providers"].round(4), f"{metric}: mean per provider, 95% bootstrap interval "
                "(resampling conversations)", console, index=True)
    pairs = out["pairs"].drop(columns="sentence").round(4)
    print_frame(pairs, f"{metric}: paired difference b - a, 95% bootstrap interval", console)
    if "strengths" in out:
        print_frame(out["strengths"].round(4), f"{metric}: Bradley-Terry strengths from per-turn "
                    "wins", console, index=True)
    for sentence in out["pairs"]["sentence"]:
        console.print(sentence, highlight=False)
    return 0


def _print_win_rates(args: argparse.Namespace, files: list[str] | None) -> int:
    """`compare --metric winner`: judge verdicts as win rates with Wilson intervals, from a
    verdict table, or from every one `harness score --pairwise` wrote beside a results file."""
    from . import verdicts
    from .significance import win_rates

    if files is None:
        files = [str(f) for f in verdicts.beside(args.results)]
        if not files:
            path = Path(args.results)
            raise UsageError(f"--metric winner: {path} is not a judge verdict table and no "
                             f"{path.stem}.pairwise-A-B{path.suffix} lies beside it (expected "
                             "one: harness score RESULTS --judge J --pairwise A,B --out "
                             f"{path})")
    loaded = {f: verdicts.load(f) for f in files}
    judges = {f: verdicts.judges(v) for f, v in loaded.items()}
    tables = {f: win_rates(v).assign(judge=judges[f]) for f, v in loaded.items()}
    if args.format != "table":
        write_tables({"win_rates": pd.concat([t.assign(file=f) for f, t in tables.items()],
                                             ignore_index=True)}, args.format)
        return 0
    console = _console()
    for f, table in tables.items():
        judge = judges[f]
        shown = pd.DataFrame({
            "a": table["a"], "b": table["b"], "judged": table["judged"],
            "a wins": table["a_wins"], "b wins": table["b_wins"], "ties": table["ties"],
            "inconsistent": table["inconsistent"], "unparsable": table["errors"],
            **{name: (table[c] * 100).round().astype("Int64")
               for name, c in (("a win %", "a_win_rate"), ("low %", "low"), ("high %", "high"))}})
        title = f"{f}: " + (f"judge {judge}, " if judge else "")
        if len(table) == 1:  # the usual file, one pair: its names in the title, not cut
            title += f"a = {table['a'].iloc[0]}, b = {table['b'].iloc[0]}"
            shown = shown.drop(columns=["a", "b"])
        console.print(title, highlight=False, markup=False)
        print_frame(shown, "a's win rate over decisive turns (won in both orders), 95% Wilson "
                    "interval", console)
        for sentence in table["sentence"]:
            console.print(sentence, highlight=False, markup=False)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    if args.out:
        results.check_format(args.out)
        check_output(args.out, [args.results, args.providers_file])
    if args.pairwise and not args.judge:
        raise UsageError("--pairwise needs --judge PROVIDER")
    chosen = [scores.scorer(s) for s in (args.scorer or scores.DEFAULT_SCORERS)]
    frame = scores.score(results.load(args.results), chosen)
    columns = [s.name for s in chosen]
    console = _console()
    pairs = []
    if args.judge:
        pairs = _judge(args, frame)
        frame = pairs.pop(0)
        columns.append(f"judge_{args.judge}")
    print_frame(compare.score_table(frame, columns),
                "Scores, mean per provider (pass/fail scores as the share passed)", console,
                index=True)
    for table in pairs:
        a, b = table["provider_a"].iloc[0], table["provider_b"].iloc[0]
        counts = table["winner"].value_counts().rename_axis("winner").rename("turns")
        print_frame(counts.to_frame(), f"{args.judge} judges {a} vs {b} (both orders)", console,
                    index=True)
        from .significance import win_rates

        for sentence in win_rates(table)["sentence"]:
            console.print(sentence, highlight=False)
    if args.out:
        path = results.save(frame, args.out)
        console.print(f"wrote {len(frame)} rows with {', '.join(columns)} to {path}")
        for table in pairs:
            a, b = table["provider_a"].iloc[0], table["provider_b"].iloc[0]
            out = Path(args.out)
            pair_path = results.save(table, out.with_name(f"{out.stem}.pairwise-{a}-{b}{out.suffix}"))
            console.print(f"wrote {len(table)} pairwise verdicts to {pair_path}")
    return 0


def _judge(args: argparse.Namespace, frame: pd.DataFrame) -> list[pd.DataFrame]:
    """The scored frame with the judge's ratings, then one pairwise table per --pairwise."""
    from . import judge

    (provider,) = resolve([args.judge], _user_providers(args.providers_file))
    known = set(frame["provider"])
    pairs = [tuple(p.split(",")) for p in args.pairwise or []]
    for pair in pairs:
        if len(pair) != 2 or not set(pair) <= known:
            raise UsageError(f"--pairwise {','.join(pair)}: expected A,B, two providers of "
                             f"{args.results} (known: {', '.join(sorted(known))})")
    params = {"max_tokens": args.judge_max_tokens} if args.judge_max_tokens else {}
    dataset = args.dataset or Path(args.results).stem
    judged = frame if not args.conversation else frame[frame["conversation_id"].isin(args.conversation)]
    with judge.Judge(provider, dataset, cassette_dir=args.cassettes,
                     record_mode=args.record_mode, params=params) as j:
        graded = judge.grade(judged, j, args.judged or None)
        tables = [judge.pairwise(judged, j, a, b) for a, b in pairs]
    if j.failures:
        print(f"harness: judge {provider.name}: {len(j.failures)} calls got no answer, their "
              f"verdicts are NA (first: {j.failures[0]})", file=sys.stderr)
    column = f"judge_{provider.name}"
    frame = frame.assign(**{column: pd.array([pd.NA] * len(frame), dtype="Float64")})
    frame.loc[graded.index, column] = graded[column]
    return [frame, *tables]


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
    from .stub_server import serve, serve_async

    if args.asyncio:
        if args.fault_rate:
            raise UsageError("--fault-rate is not served with --asyncio (expected one of them)")
        if args.latency_ms < 0 or args.jitter_ms < 0 or (args.rate is not None and args.rate <= 0):
            raise UsageError("--latency-ms and --jitter-ms must be >= 0 and --rate > 0")
        return serve_async(args.port, args.delay + args.latency_ms / 1000,
                           args.jitter_ms / 1000, args.rate, args.seed)
    return serve(args.port, args.fault_rate, args.seed, args.delay, args.chunk_delay)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"harness: error: {message} (see {self.prog} --help)\n")


def cmd_serve_local(args: argparse.Namespace) -> int:
    from .local import _model, serve

    if args.bridge_port is None:
        return serve(args.model, args.port, args.threads, args.ctx_size, parallel=args.parallel)
    from .bridge import Bridge

    port = _model(args.model).default_port if args.port is None else args.port
    with Bridge(f"http://127.0.0.1:{port}/v1", args.bridge_port) as bridge:
        print(f"bridge (Cohere v1 /v1/chat, Cohere v2 /v2/chat, Gemini /v1beta) at {bridge.base_url}",
              flush=True)
        return serve(args.model, port, args.threads, args.ctx_size, parallel=args.parallel)


# --- inspect and import: other tools' cassettes ------------------------------------------------


# in, out: Usage's meaning; cached/written: cache reads/writes; reason: reasoning part of out;
# billed: Cohere's billed in/out; id: the response id
INSPECT_COLUMNS = ["cassette", "#", "provider", "model", "stream", "status", "finish", "in", "out",
                   "cached", "written", "reason", "billed", "id", "reply"]


def _billed(n_in: int | None, n_out: int | None) -> str | None:
    if n_in is None and n_out is None:
        return None
    return f"{'—' if n_in is None else n_in}/{'—' if n_out is None else n_out}"


def display_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """An `inspect_cassettes` table narrowed for a terminal: one `reply` cell holds the text,
    else the tool calls, else the error; `finish` names the provider's own reason if it differs."""
    rows = []
    for r in frame.to_dict("records"):
        r = {k: cell for k, cell in ((k, None if v is pd.NA else v) for k, v in r.items())}
        finish = r["finish_reason"]
        if finish and r["raw_finish_reason"] and r["raw_finish_reason"] != finish:
            finish = f"{finish} ({r['raw_finish_reason']})"
        if r["protocol"] is None and r["method"] is not None:
            reply = f"({r['method']} {r['path']}: no chat call)"
        elif r["error"]:
            reply = r["error"]
        elif r["text"]:
            reply = r["text"]
        else:
            reply = f"-> {r['tool_calls']}" if r["tool_calls"] else ""
        rows.append({"cassette": Path(r["file"]).name, "#": r["index"], "provider": r["provider"],
                     "model": r["model"], "stream": "yes" if r["streamed"] else "",
                     "status": r["status"], "finish": finish, "in": r["input_tokens"],
                     "out": r["output_tokens"], "cached": r["cached_tokens"],
                     "written": r["cache_write_tokens"], "reason": r["reasoning_tokens"],
                     "billed": _billed(r["billed_input_tokens"], r["billed_output_tokens"]),
                     "id": r["response_id"], "reply": reply})
    out = pd.DataFrame(rows, columns=INSPECT_COLUMNS)
    for column in ("#", "status", "in", "out", "cached", "written", "reason"):
        out[column] = pd.array(list(out[column]), dtype="Int64")
    return out


def cmd_inspect(args: argparse.Namespace) -> int:
    if args.out:
        foreign.check_suffix(args.out, "table")
        check_output(args.out, args.cassettes)
    frame = foreign.inspect_cassettes(args.cassettes)
    console = _console()
    files = frame["file"].nunique()
    print_frame(display_frame(frame),
                f"{len(frame)} interactions in {files} cassette{'s' * (files != 1)}",
                console, max_chars=args.max_chars)
    if args.out:
        console.print(f"wrote {foreign.save_table(frame, args.out)}", highlight=False, markup=False,
                      soft_wrap=True)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    for out, flag in ((args.out, "--out"), (args.baseline, "--baseline")):
        if out is not None:
            check_output(out, args.cassettes, force=args.force, flag=flag)
    if args.baseline is not None and Path(args.baseline).resolve() == Path(args.out).resolve():
        raise ValueError(f"--baseline {args.baseline} is --out too (expected two files)")
    plan = foreign.plan_import(args.cassettes)
    dataset, frame = foreign.write_import(plan, args.out, args.baseline)
    console = _console()
    summary = pd.DataFrame([
        {"conversation": c.id, "source": Path(c.metadata.get("source", "")).name,
         "provider": c.metadata.get("provider"), "model": c.metadata.get("model"),
         "turns": len(c.user_turns()),
         "baseline rows": int((frame["conversation_id"] == c.id).sum()),
         "tool steps": len(c.metadata.get("tool_steps") or [])}
        for c in dataset])
    print_frame(summary, f"{len(dataset)} conversations, {len(dataset.turns())} user turns, "
                f"{len(frame)} baseline rows", console, max_chars=60)
    for line in plan.skipped:
        console.print(f"not imported: {line}", highlight=False, markup=False, soft_wrap=True)
    console.print(f"wrote {args.out}" + (f" and {args.baseline}" if args.baseline else ""),
                  highlight=False, markup=False, soft_wrap=True)
    return 0


def add_foreign_commands(sub: argparse._SubParsersAction) -> None:
    """Add `inspect` and `import` to the `python -m harness` subcommands."""
    p = sub.add_parser("inspect", help="one row per interaction of any vcrpy cassettes")
    p.add_argument("cassettes", nargs="+", metavar="CASSETTE",
                   help="cassette files (vcrpy YAML/JSON), or folders of them")
    p.add_argument("--out", "-o", metavar="FILE", help="also save the table (.csv, .parquet, .jsonl)")
    p.add_argument("--max-chars", type=int, default=40, metavar="N",
                   help="shorten long cells to N characters (default 40)")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("import", help="turn recorded chat requests into a dataset and a baseline")
    p.add_argument("cassettes", nargs="+", metavar="CASSETTE",
                   help="cassette files (vcrpy YAML/JSON), or folders of them")
    p.add_argument("--out", "-o", required=True, metavar="DATASET",
                   help="where to write the dataset (JSONL)")
    p.add_argument("--baseline", metavar="RESULTS",
                   help="also write the recorded replies as results (.parquet, .csv, .jsonl)")
    p.add_argument("--force", action="store_true", help="replace --out / --baseline if they exist")
    p.set_defaults(func=cmd_import)


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
    p.add_argument("--tools", metavar="FILE",
                   help="JSON array of tool schemas offered in conversations that name none")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N conversations")
    p.add_argument("--max-tokens", type=int, metavar="N")
    p.add_argument("--temperature", type=float, metavar="T")
    p.add_argument("--seed", type=int, metavar="S")
    p.add_argument("--concurrency", type=_concurrency, default=4, metavar="N",
                   help=f"conversations in flight at once (default 4, at most {MAX_CONCURRENCY}),"
                        " or auto: grow while calls succeed, halve on 429/503/529 (AIMD)")
    p.add_argument("--stream", action="store_true",
                   help="ask each provider for its stream and time it: ttft_ms, itl_ms, ...")
    p.add_argument("--timeout", type=_timeout, default=120.0, metavar="SECONDS",
                   help="per-request HTTP timeout (default 120)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="run conversations on N Dask worker processes on this machine "
                        "(needs the 'dask' extra); this process writes every file")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="run conversations on an existing Dask cluster (needs the 'dask' "
                        "extra); workers need no shared filesystem")
    p.add_argument("--out", "-o", metavar="FILE",
                   help="write results (.parquet, .csv, .jsonl); rows are journaled to "
                        "FILE.journal.jsonl as they complete, and the same command run again "
                        "after a crash resumes from it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--show", choices=SHOW, default="summary",
                   help="summary: one line per provider (default); replies: also the replies "
                        "side by side; all: also the full usage tables")
    p.set_defaults(func=cmd_replay)

    p = with_common(sub.add_parser("compare", help="print the comparison tables of a results file"))
    p.add_argument("results")
    p.add_argument("--metric", "-m", metavar="COLUMN",
                   help="instead, is the difference between providers on this score real? "
                        "(bootstrap intervals by conversation, paired; McNemar for pass/fail); "
                        "winner: the judge's pairwise verdicts as win rates (a verdict table, "
                        "or the ones harness score --pairwise wrote beside RESULTS)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--show", choices=SHOW, default="summary",
                   help="summary (default), replies (side by side too) or all")
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="table for the terminal (default), or markdown, csv, json")
    p.set_defaults(func=cmd_compare)

    p = with_common(sub.add_parser("score", help="score replies against the reference"))
    p.add_argument("results")
    p.add_argument("--scorer", "-s", action="append", metavar="NAME",
                   help="exact, contains, regex, regex:PATTERN, similarity, rouge_l, chrf "
                        f"(repeatable; default: {', '.join(scores.DEFAULT_SCORERS)})")
    p.add_argument("--out", "-o", metavar="FILE",
                   help="write the scored rows (.parquet, ...); pairwise verdicts go beside it")
    p.add_argument("--judge", metavar="PROVIDER",
                   help="also grade each reply 1-10 with this provider (MT-Bench single-answer)")
    p.add_argument("--judged", action="append", metavar="PROVIDER",
                   help="only grade these providers' replies (repeatable; default: all)")
    p.add_argument("--conversation", action="append", metavar="ID",
                   help="only judge these conversations (repeatable; default: all)")
    p.add_argument("--pairwise", action="append", metavar="A,B",
                   help="judge A against B, both orders (repeatable; needs --judge)")
    p.add_argument("--dataset", metavar="NAME",
                   help="judge cassettes go to CASSETTES/NAME/judge-PROVIDER/ "
                        "(default: the results file's stem)")
    p.add_argument("--record-mode", choices=RECORD_MODES, default="none",
                   help="for the judge's calls, as in replay (default none: offline)")
    p.add_argument("--judge-max-tokens", type=int, metavar="N",
                   help="the judge's max_tokens (default 512)")
    p.set_defaults(func=cmd_score)

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
    p.add_argument("--bridge-port", type=int, metavar="PORT",
                   help="also answer Cohere v1/v2 and Gemini on this port, from the same model")
    p.set_defaults(func=cmd_serve_local)

    p = sub.add_parser("serve-stub", help="run the deterministic stub server on 127.0.0.1")
    p.add_argument("--port", type=int, default=8099)
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--delay", type=float, default=0.0, help="seconds to wait before each answer")
    p.add_argument("--chunk-delay", type=float, default=0.0, metavar="SECONDS",
                   help="seconds before each event of a streamed answer")
    p.add_argument("--asyncio", action="store_true",
                   help="serve on asyncio with keep-alive (for load; no --fault-rate)")
    p.add_argument("--latency-ms", type=float, default=0.0, metavar="MS",
                   help="with --asyncio: milliseconds before each answer")
    p.add_argument("--jitter-ms", type=float, default=0.0, metavar="MS",
                   help="with --asyncio: latency varies by up to this much either way")
    p.add_argument("--rate", type=float, metavar="R",
                   help="with --asyncio: answer at most R requests a second, 429 beyond")
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
