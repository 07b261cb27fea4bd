"""The session's HTML report: one self-contained file (inline CSS and SVG, no network).

Plain data in, text out, like :mod:`pytest_racecheck.results.report`: it draws the JSON report's
document (``report.build(rows)``), so what the picture shows is what the JSON holds. Every race
gets its verdict, outcome histogram and timings; a race with a failing round gets that round as
a timeline: a lane per racer, each step as a box placed by its real times (held at the point,
then the statement running, a lock wait where a probe saw one), the racer's result or
exception at the end of its lane, the step that broke the rule marked, the anomaly named, and
the replay schedule ready to copy.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

from pytest_racecheck.results.html_style import COPY_JS, PAGE_CSS, PICTURE_CSS

WIDTH = 980
LEFT = 150
RIGHT = 170
LANE = 46
TOP = 28
BOX = 22
CHAR_PX = 6.4

_KIND_CLASS = {
    "read": "read",
    "insert": "write",
    "update": "write",
    "delete": "write",
    "commit": "commit",
    "rollback": "txn",
    "begin": "txn",
    "lock": "lock",
    "unlock": "lock",
    "other": "txn",
    "point": "code",
}


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _fit(text: str, px: float) -> str:
    """``text`` cut to what fits in ``px`` pixels, or '' when not even three characters do."""
    room = int(px // CHAR_PX)
    if room >= len(text):
        return text
    return text[: room - 1] + "…" if room >= 4 else ""


def _short(name: str) -> str:
    return name.split(" @ ", 1)[0]


def step_class(step: dict[str, Any]) -> str:
    """The box's class: what the statement does (read, write, commit, ...), or a code point."""
    return _KIND_CLASS.get(step.get("kind") or "point", "txn")


def schedule_text(schedule: Sequence[str]) -> str:
    """The replay schedule as Python, ready to paste into ``race(...)``."""
    lines = "".join(f"\n    {json.dumps(step, ensure_ascii=False)}," for step in schedule)
    return f"schedule=[{lines}\n]"


def timeline_svg(rnd: dict[str, Any], dom_id: str = "t") -> str:
    """The round as an SVG timeline: one lane per racer, the steps as boxes on one time axis."""
    racers = rnd.get("racers") or []
    anomaly = rnd.get("anomaly") or {}
    in_anomaly = {tuple(ref) for ref in anomaly.get("steps") or []}
    marked = tuple(anomaly["marked"]) if anomaly.get("marked") else _default_mark(racers)
    end = max((r["released_ms"] + r["took_ms"] for r in racers), default=0.0)
    span = max(end, 0.001)
    plot = WIDTH - LEFT - RIGHT
    scale = plot / span

    def x(ms: float) -> float:
        return round(LEFT + ms * scale, 1)

    height = TOP + LANE * len(racers) + 24
    hatch = f"{dom_id}-hatch"
    out = [
        f'<svg class="timeline" id="{_e(dom_id)}" xmlns="http://www.w3.org/2000/svg" '
        f'width="100%" viewBox="0 0 {WIDTH} {height}" style="max-width:{WIDTH}px" role="img" '
        f'aria-label="timeline of round {_e(rnd.get("index"))}">',
        f'<defs><pattern id="{_e(hatch)}" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#fde7e9"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#d1242f" stroke-width="2"/></pattern></defs>',
    ]
    for i in range(6):  # the time axis
        ms = span * i / 5
        out.append(
            f'<line class="axis" x1="{x(ms)}" y1="{TOP - 6}" x2="{x(ms)}" '
            f'y2="{height - 20}"/><text class="tick" x="{x(ms)}" y="{TOP - 10}" '
            f'text-anchor="middle">{ms:.2f} ms</text>'
        )
    for lane, racer in enumerate(racers):
        number = racer["racer"]
        y = TOP + lane * LANE + (LANE - BOX) / 2
        mid = y + BOX / 2
        out.append(f'<g class="lane" data-racer="{number}">')
        out.append(
            f'<text class="lane-label" x="8" y="{mid + 4}">racer {number}</text>'
            f'<line class="axis" x1="{LEFT}" y1="{mid}" x2="{LEFT + plot}" y2="{mid}"/>'
        )
        steps = racer.get("steps") or []
        for i, step in enumerate(steps):
            out.append(_step_svg(step, number, i, (x, y), (number, i) in in_anomaly, marked, hatch))
        out.append(_result_svg(racer, len(steps), x, y, marked))
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def _default_mark(racers: list[dict[str, Any]]) -> tuple[int, int] | None:
    """Without a named anomaly: the result of the first racer that raised, else None."""
    for racer in racers:
        if racer.get("error"):
            return (racer["racer"], len(racer.get("steps") or []))
    return None


def _step_svg(
    step: dict[str, Any],
    racer: int,
    index: int,
    where: tuple[Any, float],
    in_anomaly: bool,
    marked: tuple[int, int] | None,
    hatch: str,
) -> str:
    """A step as a box placed by its real times, so that the picture shows who ran when."""
    x, y = where
    at, held, ran = step["at_ms"], step["held_ms"], step["ran_ms"]
    start = at + held
    kind = step_class(step)
    classes = ["step", kind]
    if in_anomaly:
        classes.append("in-anomaly")
    is_marked = marked == (racer, index)
    if is_marked:
        classes.append("marked")
    left, right = x(start), x(start + ran)
    width = max(right - left, 2.0)
    parts = [f'<g class="{" ".join(classes)}" data-racer="{racer}" data-step="{index}">']
    parts.append(f"<title>{_e(_step_detail(step))}</title>")
    parts += _reached_svg(step, kind, where, left)
    parts.append(
        f'<rect class="{kind}{" in-anomaly" if in_anomaly else ""}" x="{left}" y="{y}" '
        f'width="{width:.1f}" height="{BOX}" rx="3"/>'
    )
    if step.get("blocked_at_ms") is not None:
        parts.append(_lock_wait_svg(x(step["blocked_at_ms"]), where, left, right, hatch))
    label = _fit(_short(step["name"]), width - 4)
    if label:
        parts.append(f'<text x="{left + 3}" y="{y + BOX / 2 + 4}">{_e(label)}</text>')
    if is_marked:
        parts.append(
            f'<rect class="marked" x="{left - 2}" y="{y - 2}" width="{width + 4:.1f}" '
            f'height="{BOX + 4}" rx="4" fill="none"/>'
            f'<text class="mark-label" x="{left}" y="{y - 4}">✗ breaks here</text>'
        )
    parts.append("</g>")
    return "".join(parts)


def _step_detail(step: dict[str, Any]) -> str:
    """The hover text: the box shows a name cut to fit; the reader of a failure needs the
    statement whole and the times that say whether the step waited, was held, or ran long."""
    at, held, ran = step["at_ms"], step["held_ms"], step["ran_ms"]
    title = step.get("sql") or step["name"]
    detail = (
        f"{step['name']}\n{title if title != step['name'] else ''}\n"
        f"reached {at:.3f} ms, held {held:.3f} ms, ran {ran:.3f} ms"
    )
    if step.get("blocked_at_ms") is not None:
        detail += f", blocked on a lock from {step['blocked_at_ms']:.3f} ms"
    return detail


def _reached_svg(
    step: dict[str, Any], kind: str, where: tuple[Any, float], left: float
) -> list[str]:
    """Where the racer reached the step, and the line to where it ran when the race held it
    there: a hold is the harness's doing, so it is drawn apart from the step's own time."""
    x, y = where
    at = step["at_ms"]
    parts = []
    if step["held_ms"] > 0:
        parts.append(
            f'<line class="held" x1="{x(at)}" y1="{y + BOX / 2}" x2="{left}" y2="{y + BOX / 2}"/>'
        )
    if kind == "code":  # a point() of the code: a diamond, named above the lane
        cx, cy = x(at), y + BOX / 2
        parts.append(
            f'<path class="point" d="M{cx} {cy - 6}l5 6l-5 6l-5 -6z" fill="#3d4a61"/>'
            f'<text class="point-label" x="{cx + 4}" y="{y - 3}">{_e(step["name"][:40])}</text>'
        )
    else:
        parts.append(f'<circle cx="{x(at)}" cy="{y + BOX / 2}" r="2.5" fill="#5b6475"/>')
    return parts


def _lock_wait_svg(
    blocked_x: float, where: tuple[Any, float], left: float, right: float, hatch: str
) -> str:
    """The part of the step spent waiting on another racer's lock, hatched over its box: the
    wait is what a lost race usually hinges on."""
    y = where[1]
    wait_left = max(blocked_x, left)
    return (
        f'<rect class="wait" fill="url(#{_e(hatch)})" x="{wait_left}" y="{y + 3}" '
        f'width="{max(right - wait_left, 2):.1f}"'
        f' height="{BOX - 6}"><title>lock wait</title></rect>'
    )


def _result_svg(
    racer: dict[str, Any], index: int, x: Any, y: float, marked: tuple[int, int] | None
) -> str:
    """The racer's return value or exception, just after its lane's last moment."""
    number = racer["racer"]
    end = racer["released_ms"] + racer["took_ms"]
    raised = bool(racer.get("error"))
    text = racer["error"] if raised else racer["outcome"]
    is_marked = marked == (number, index)
    left = x(end) + 4
    width = RIGHT - 12
    classes = "result raised" if raised else "result"
    parts = [
        f'<g class="step {classes}{" marked" if is_marked else ""}" data-racer="{number}" '
        f'data-step="{index}"><title>{_e(text)}\nreturned at {end:.3f} ms</title>',
        f'<rect class="{classes}" x="{left}" y="{y}" width="{width}" height="{BOX}" rx="3"/>',
        f'<text x="{left + 4}" y="{y + BOX / 2 + 4}">'
        f"{_e(_fit(('raised ' if raised else '→ ') + str(text), width - 6))}</text>",
    ]
    if is_marked:
        parts.append(
            f'<rect class="marked" x="{left - 2}" y="{y - 2}" width="{width + 4}" '
            f'height="{BOX + 4}" rx="4" fill="none"/>'
            f'<text class="mark-label" x="{left}" y="{y - 4}">✗ breaks here</text>'
        )
    parts.append("</g>")
    return "".join(parts)


def _histogram_svg(race: dict[str, Any]) -> str:
    rows = race.get("histogram") or []
    failing = {h["outcome"] for h in race.get("failing_histogram") or []}
    if not rows:
        return ""
    most = max(h["rounds"] for h in rows)
    bar = 300
    height = 20 * len(rows) + 4
    out = [
        f'<svg class="histogram" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{height}" viewBox="0 0 {WIDTH} {height}">'
    ]
    for i, h in enumerate(rows):
        y = 2 + i * 20
        w = max(bar * h["rounds"] / most, 2)
        color = "#d1242f" if h["outcome"] in failing else "#4a86d8"
        out.append(
            f'<rect x="0" y="{y}" width="{w:.1f}" height="15" rx="2" fill="{color}"/>'
            f'<text x="{bar + 8}" y="{y + 12}">{h["rounds"]:>5} x {_e(h["outcome"])}'
            f"{'  ← fails' if h['outcome'] in failing else ''}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v:g}{unit}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:g}{unit}"
    return f"{value}{unit}"


def _race_section(number: int, race: dict[str, Any]) -> str:
    verdict = race["verdict"]
    timings = race.get("timings") or {}
    rows = [
        ("function", race.get("fn")),
        ("mode", str(race.get("mode")) + (f" ({race['search']})" if race.get("search") else "")),
        ("rounds", f"{race['rounds_run']} of {race['rounds_requested']}"),
        ("racers", race["racers"]),
        ("failing rounds", race.get("failing_rounds", 0)),
        ("seed", race.get("seed")),
        ("start-up", _fmt(timings.get("startup_s"), " s")),
        ("whole race", _fmt(timings.get("elapsed_s"), " s")),
        ("per round", _fmt(timings.get("per_round_ms"), " ms")),
        ("round (release to last return)", _fmt(timings.get("round_ms"), " ms")),
        ("release skew", _fmt(timings.get("release_skew_us"), " µs")),
    ]
    iso = race.get("isolation") or {}
    if iso.get("level"):
        named = ", ".join(iso.get("named_by_code") or [])
        rows.insert(3, ("isolation", f"{iso['level']} (set by {iso.get('source')})"))
        if named:
            rows.insert(4, ("levels the code named (kept)", named))
    if iso.get("refused"):
        refused = ", ".join(f"{n} {kind}" for kind, n in sorted(iso["refused"].items()))
        rows.append(
            (
                "refused by the database",
                f"{refused} in {iso.get('refused_rounds')} round(s): the code needs a retry "
                f"loop; wrong results in {iso.get('wrong_result_rounds')} round(s)",
            )
        )
    if race.get("status") == "broke down":
        rows.insert(0, ("status", "the race broke down (race() raised)"))
    table = "".join(
        f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows if v not in (None, "")
    )
    parts = [
        f'<section class="race {_e(verdict)}" id="race-{number}">',
        f'<h2><span class="badge {_e(verdict)}">{_e(verdict)}</span>{_e(race["test_id"])}</h2>',
        f'<table class="kv">{table}</table>',
        "<h3>outcomes (rounds)</h3>",
        _histogram_svg(race),
    ]
    rnd = race.get("first_failure")
    if rnd:
        parts.append(failing_round_html(rnd, f"race-{number}"))
    parts.append("</section>")
    return "".join(parts)


def failing_round_html(rnd: dict[str, Any], dom_id: str) -> str:
    """The failing round: why, the anomaly, the timeline, the replay schedule (also the
    pytest-html extra)."""
    parts = [f"<h3>first failing round, #{_e(rnd['index'])}</h3>"]
    if rnd.get("why"):
        parts.append(f'<p class="why">{_e(rnd["why"])}</p>')
    anomaly = rnd.get("anomaly")
    if anomaly:
        name = anomaly["name"]
        if name == "unclassified":
            text = "unclassified: the statements show none of the standard shapes"
        else:
            text = f"<b>{_e(name)}</b> ({_e(anomaly.get('adya'))}): {_e(anomaly.get('why'))}"
            if anomaly.get("hermitage"):
                text += (
                    f"; Hermitage {_e(anomaly['hermitage'])}, prevented by "
                    f"{_e(anomaly.get('prevented_by'))}"
                )
            text = f"anomaly: {text}"
        klass = "anomaly unclassified" if name == "unclassified" else "anomaly"
        parts.append(f'<div class="{klass}" data-anomaly="{_e(name)}">{text}</div>')
    parts.append(timeline_svg(rnd, f"{dom_id}-timeline"))
    parts.append(
        '<div class="legend"><span><i style="background:#cfe3ff;border-color:#4a86d8"></i>read'
        '</span><span><i style="background:#ffd9b3;border-color:#d9822b"></i>write</span>'
        '<span><i style="background:#c9efd3;border-color:#2f9e55"></i>commit</span>'
        '<span><i style="background:#e4e7ec;border-color:#98a2b3"></i>begin / other</span>'
        '<span><i style="background:#e6dcff;border-color:#7b5cd6"></i>lock</span>'
        '<span><i style="background:#f1f3f6;border-color:#c4cad4"></i>code after a point()'
        "</span><span>&#9670; a point()</span>"
        '<span><i style="background:#fde7e9;border-color:#d1242f"></i>lock wait</span>'
        "<span>- - held at the point</span></div>"
    )
    schedule = rnd.get("schedule") or []
    if schedule:
        pre_id = f"{dom_id}-schedule"
        parts.append(
            "<h3>replay this interleaving</h3>"
            f'<pre class="schedule" id="{_e(pre_id)}">{_e(schedule_text(schedule))}</pre>'
            f'<button class="copy" onclick="racecheckCopy(\'{_e(pre_id)}\')">copy</button>'
        )
    if rnd.get("check"):
        parts.append(f'<p class="check">{_e(rnd["check"])}</p>')
    return "".join(parts)


def render(document: dict[str, Any]) -> str:
    """The whole page for a session's report document."""
    races = document.get("races") or []
    verdicts = ", ".join(f"{n} {v}" for v, n in sorted((document.get("verdicts") or {}).items()))
    sections = "".join(_race_section(i, race) for i, race in enumerate(races, 1))
    title = "racecheck report"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{PAGE_CSS}{PICTURE_CSS}</style><script>{COPY_JS}</script>"
        '</head><body class="racecheck">'
        f"<h1>{title}</h1>"
        f'<p class="meta">{len(races)} race{"s" if len(races) != 1 else ""}'
        f"{': ' + _e(verdicts) if verdicts else ''} · {_e(document.get('created', ''))} · "
        f"pytest-racecheck {_e(document.get('plugin_version') or '')}</p>"
        f"{sections}</body></html>\n"
    )


def picture_extra(rnd: dict[str, Any], dom_id: str) -> str:
    """The failing round for another tool's page (a pytest-html extra): its own styles, all
    under ``.racecheck``, and the copy button's script."""
    return (
        f'<div class="racecheck"><style>{PICTURE_CSS}</style><script>{COPY_JS}</script>'
        f"{failing_round_html(rnd, dom_id)}</div>"
    )
