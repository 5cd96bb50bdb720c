"""The Training page's summary: what a person watching a run wants to know first, in words.

The status dict (training_server/status.py) is a server's internal counters; a person asks
other questions: is a new checkpoint coming (which one, how old, how close is the next), is
self-play feeding it (examples and games per second, workers connected), is it learning (losses,
strength against the rollout baseline) and is anything broken. `overview` answers those from
the status dict and the checkpoint table's rows, with labels, units and formatting decided here,
on the server, where they are tested; the page only lays them out. Every other status field
follows in `details`, labelled, for the page's collapsed section.

Every input is optional: a status dict without a field (another host, an older server) gives
"–" for what needs it, never an error.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["DETAIL_LABELS", "Item", "fmt_duration", "fmt_number", "overview"]

NONE = "–"

# The status dict's fields as people name them, with their unit; a field not listed here is
# shown by its path ("wal id").
DETAIL_LABELS: dict[str, tuple[str, str]] = {
    "model": ("Model name", ""),
    "checkpoint": ("Latest checkpoint", ""),
    "ready": ("Trainer ready", ""),
    "failure": ("Trainer failure", ""),
    "examples.received": ("Examples received since start", ""),
    "examples.recovered": ("Examples recovered from the write-ahead log at start", ""),
    "examples.pending": ("Examples waiting for the next checkpoint", ""),
    "examples.trained": ("Examples trained into checkpoints", ""),
    "examples.minibatch": ("New examples that start a training run", ""),
    "examples.max_pending": ("Most examples held before uploads are refused", ""),
    "examples.per_second": ("Examples received per second (last minute)", "examples/s"),
    "games.received": ("Games received since start", ""),
    "games.per_second": ("Games received per second (last minute)", "games/s"),
    "training.in_progress": ("Training now", ""),
    "training.runs": ("Training runs since start", ""),
    "training.failures": ("Training runs discarded since start", ""),
    "training.window": ("Examples in the training window", ""),
    "training.last.policy_loss": ("Policy loss of the last run", ""),
    "training.last.value_loss": ("Value loss of the last run", ""),
    "training.last.score_loss": ("Score loss of the last run", ""),
    "training.last.steps": ("Optimizer steps in the last run", ""),
    "training.last.samples": ("Samples trained on in the last run", ""),
    "training.last.seconds": ("Duration of the last run", "s"),
    "training.last.window": ("Newest examples the last run sampled from", ""),
    "workers.active": ("Workers that uploaded recently", ""),
    "workers.window_seconds": ("A worker counts as connected for", "s"),
    "wal.id": ("Write-ahead log id", ""),
    "wal.first": ("Write-ahead log start offset", "B"),
    "wal.end": ("Write-ahead log end offset", "B"),
    "wal.trained_position": ("Write-ahead log offset trained up to", "B"),
    "wal.segments": ("Write-ahead log segment files", ""),
    "wal.commits": ("Write-ahead log group commits (fsync) since start", ""),
    "redis.checkpoint": ("Checkpoint announced on Redis", ""),
    "redis.channel": ("Redis channel", ""),
    "uptime_seconds": ("Server uptime", "s"),
}


@dataclass(frozen=True)
class Item:
    """One line of the summary. `text` is the value with its unit as shown; `note` says where
    it comes from or what it means; `level` is how the page colours it."""

    id: str
    label: str
    text: str
    value: Any = None
    note: str = ""
    level: str = "ok"   # ok | idle (nothing to show yet) | warn | error


def fmt_number(x: float | None, unit: str = "") -> str:
    """A count with thousands separators, or a measurement to three significant digits (not
    more: rates and losses are not that exact; trailing zeros dropped), then the unit."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return NONE
    if isinstance(x, bool):
        text = "yes" if x else "no"
    elif isinstance(x, int) or float(x).is_integer() and abs(x) >= 100:
        text = f"{round(x):,}"
    elif x == 0:
        text = "0"
    else:
        digits = max(0, 2 - math.floor(math.log10(abs(x))))
        text = f"{x:,.{digits}f}"
        text = text.rstrip("0").rstrip(".") if "." in text else text
    return f"{text} {unit}" if unit else text


def fmt_duration(seconds: float | None) -> str:
    """'42 s', '3 min 5 s', '2 h 5 min', '3 d 4 h': the two largest units are enough."""
    if seconds is None or not math.isfinite(seconds):
        return NONE
    s = max(0, round(seconds))
    parts = [(s // 86400, "d"), (s // 3600 % 24, "h"), (s // 60 % 60, "min"), (s % 60, "s")]
    while len(parts) > 1 and parts[0][0] == 0:
        parts.pop(0)
    return " ".join(f"{n} {u}" for n, u in parts[:2] if n or u == parts[0][1])


def _get(d: Any, path: str) -> Any:
    for k in path.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _num(x: Any) -> float | None:
    """x if it is a finite number (bools are not counts), else None."""
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    return x if ok else None


def _plural(n: int, word: str, words: str = "") -> str:
    return f"{n:,} {word if n == 1 else words or word + 's'}"


def _checkpoint_items(status: dict, rows: list[dict], now: float) -> Iterator[Item]:
    latest = rows[-1] if rows else None
    n = latest["checkpoint"] if latest else _num(status.get("checkpoint"))
    if n is None:
        yield Item("checkpoint", "Latest checkpoint", "none yet",
                   note="the first one is trained from the first games", level="idle")
    else:
        yield Item("checkpoint", "Latest checkpoint", fmt_number(n), n,
                   note=f"{fmt_number(_num(latest.get('examples_trained')), 'examples')} "
                        f"trained" if latest else "")
    created = _num(latest.get("created")) if latest else None
    age = None if created is None else max(0.0, now - created)
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(created)) if created else ""
    yield Item("checkpoint_age", "Age of the latest checkpoint", fmt_duration(age),
               None if age is None else round(age, 1),
               note=f"published {when}" if when else "", level="ok" if age is not None
               else "idle")
    pending, trigger = _num(_get(status, "examples.pending")), \
        _num(_get(status, "examples.minibatch"))
    if _get(status, "training.in_progress"):
        note = "examples; training it now"
    elif pending is not None and trigger:
        note = f"examples, {min(100, round(100 * pending / trigger))}% of what it needs"
    else:
        note = "examples"
    text = f"{fmt_number(pending)} / {fmt_number(trigger)}" if trigger else fmt_number(pending)
    yield Item("next_checkpoint", "Examples for the next checkpoint", text, pending, note=note,
               level="ok" if pending is not None else "idle")


def _selfplay_items(status: dict) -> Iterator[Item]:
    ex = _num(_get(status, "examples.per_second"))
    yield Item("examples_per_second", "Examples per second", fmt_number(ex, "examples/s"), ex,
               note="received, over the last minute", level="ok" if ex is not None else "idle")
    games, total = _num(_get(status, "games.per_second")), _num(_get(status, "games.received"))
    note = f"{fmt_number(games * 60, 'games/min')}" if games else ""
    if total is not None:
        note += f"{'; ' if note else ''}{_plural(int(total), 'game')} since start"
    yield Item("games_per_second", "Games per second", fmt_number(games, "games/s"), games,
               note=note, level="ok" if games is not None else "idle")
    workers = _num(_get(status, "workers.active"))
    window = _num(_get(status, "workers.window_seconds"))
    yield Item("workers", "Connected workers", fmt_number(workers), workers,
               note=f"uploaded a game in the last {fmt_duration(window)}" if window else "",
               level="idle" if workers is None else "ok" if workers else "warn")


def _learning_items(status: dict, rows: list[dict]) -> Iterator[Item]:
    with_loss = [r for r in rows if _num(r.get("policy_loss")) is not None]
    src = with_loss[-1] if with_loss else None
    last = _get(status, "training.last") or {}
    for key, label in (("policy_loss", "Policy loss"), ("value_loss", "Value loss")):
        v = _num(src.get(key)) if src else _num(last.get(key))
        yield Item(key, label, fmt_number(v), v,
                   note=f"checkpoint {src['checkpoint']}" if src and v is not None else "",
                   level="ok" if v is not None else "idle")
    evaluated = [r for r in rows if "rollout" in (r.get("matches") or {})]
    if not evaluated:
        yield Item("strength", "Strength vs the rollout baseline", "not measured yet",
                   note="the server measures it with --eval-openings", level="idle")
        return
    r = evaluated[-1]
    m = r["matches"]["rollout"]
    score = _num(m.get("score"))
    parts = [f"checkpoint {r['checkpoint']}: " + ", ".join(
        _plural(int(m.get(k) or 0), *w) for k, w in (("wins", ("win",)), ("draws", ("draw",)),
                                                       ("losses", ("loss", "losses"))))]
    if _num(r.get("elo")) is not None:
        parts.append(f"Elo {r['elo']:+.0f} vs checkpoint 0")
    yield Item("strength", "Strength vs the rollout baseline",
               NONE if score is None else f"{100 * score:.0f}% score", score,
               note="; ".join(parts))


def failures(status: dict, rows: list[dict]) -> list[str]:
    """What is wrong now, each in one sentence; [] when nothing is."""
    out = []
    if status.get("failure"):
        out.append(f"Trainer: {status['failure']}")
    discarded = _num(_get(status, "training.failures"))
    if discarded:
        out.append(f"{_plural(int(discarded), 'training run')} discarded since start "
                   f"(see the server log)")
    errors = [r for r in rows if r.get("eval_error")]
    if errors:
        out.append(f"Evaluation of checkpoint {errors[-1]['checkpoint']} failed: "
                   f"{errors[-1]['eval_error']}")
    return out


def _flatten(d: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        elif not isinstance(v, list):
            yield f"{prefix}{k}", v


def details(status: dict) -> list[dict]:
    """Every scalar field of the status dict, labelled, in the dict's order."""
    out = []
    for path, v in _flatten(status):
        label, unit = DETAIL_LABELS.get(path, (path.replace(".", " ").replace("_", " "), ""))
        text = (fmt_duration(v) if unit == "s" and _num(v) is not None
                else fmt_number(v, unit) if isinstance(v, (int, float)) or v is None
                else str(v))
        out.append({"key": path, "label": label, "text": text})
    return out


def overview(status: dict, rows: list[dict], now: Callable[[], float] = time.time) -> dict:
    """GET /ui/api/overview: {model, state, failures, summary: [Item], details}. `rows` are
    the checkpoint table's (web/ui.py), oldest first; `now` the wall clock (checkpoint ages
    compare it with meta.json's `created`)."""
    fails = failures(status, rows)
    ready = status.get("ready")
    state = ("failing" if fails and status.get("failure") else
             "starting" if ready is False else "running")
    summary = [*_checkpoint_items(status, rows, now()), *_selfplay_items(status),
               *_learning_items(status, rows)]
    return {"model": status.get("model"), "state": state, "failures": fails,
            "summary": [asdict(i) for i in summary], "details": details(status)}
