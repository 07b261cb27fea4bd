"""The HTML report (``--racecheck-html``): drawn in a real headless Chromium, merged across
pytest-xdist workers, and the same timeline as a pytest-html extra.

The browser tests skip, saying why, where no Chromium is installed (``.ci/run`` installs
Debian's ``chromium``). Chromium runs with a fresh profile in the test's tmp_path and every
background service off, on a page that loads nothing from the network.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from pytest_racecheck.results import html as html_report

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)"
)

SESSION = """
import sqlite3


def attempt(path, immediate):
    # immediate: check and insert in one write transaction; else each statement alone
    conn = sqlite3.connect(path, isolation_level=None, timeout=5)
    try:
        if immediate:
            conn.execute("BEGIN IMMEDIATE")
        if conn.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()[0]:
            conn.execute("COMMIT") if immediate else None
            return "refused"
        conn.execute("INSERT INTO runs (status) VALUES ('running')")
        conn.execute("COMMIT") if immediate else None
        return "created"
    finally:
        conn.close()


def _race(race, db, immediate, **how):
    db.executescript("CREATE TABLE runs (id INTEGER PRIMARY KEY, status TEXT)")
    return race(
        attempt, db.path, immediate, timeout=120,
        reset=lambda: db.execute("DELETE FROM runs"),
        check=lambda: db.scalar("SELECT count(*) FROM runs") == 1,
        **how,
    )


def test_explored(race, sqlite_db):
    result = _race(race, sqlite_db, False, processes=2, explore=20, seed=1)
    result.assert_exactly_one("created")


def test_guarded(race, sqlite_db):
    result = _race(race, sqlite_db, True, processes=3, rounds=10)
    result.assert_exactly_one("created")
"""

MEASURE = """
<script>
window.addEventListener("load", function () {
  var out = [];
  document.querySelectorAll("section.race").forEach(function (section) {
    var lanes = [];
    section.querySelectorAll("svg.timeline g.lane").forEach(function (g) {
      var b = g.getBBox();
      lanes.push({racer: g.dataset.racer, y: b.y, width: b.width, height: b.height});
    });
    var marked = section.querySelector("svg.timeline g.marked rect.marked");
    var box = marked ? marked.getBBox() : null;
    var pre = section.querySelector("pre.schedule");
    out.push({
      id: section.querySelector("h2").textContent,
      lanes: lanes,
      marked: box ? {width: box.width, height: box.height} : null,
      schedule: pre ? pre.textContent : null,
      histogram_bars: section.querySelectorAll("svg.histogram rect").length,
    });
  });
  var pre = document.createElement("pre");
  pre.id = "measured";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def chromium(tmp_path: Path, *args: str) -> str:
    """Run headless Chromium with a fresh profile and nothing in the background."""
    assert CHROMIUM is not None
    profile = tmp_path / "chromium-profile"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _session_page(pytester: pytest.Pytester, *args: str) -> Path:
    pytester.makepyfile(test_session=SESSION)
    result = pytester.runpytest_inprocess("--racecheck-html=out/page.html", *args)
    result.assert_outcomes(passed=1, failed=1)
    page = pytester.path / "out" / "page.html"
    result.stdout.fnmatch_lines(
        ["anomaly in test_session.py::test_explored: phantom (Adya G2*", f"racecheck html: {page}"]
    )
    return page


@needs_chromium
def test_the_page_draws_a_lane_per_racer_the_breaking_step_and_the_schedule(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    page = _session_page(pytester)
    text = page.read_text(encoding="utf-8")
    # self-contained: nothing to load (the only URL is SVG's namespace name)
    assert not re.search(r"\b(src|href)=", text)
    assert set(re.findall(r"https?://[^\s\"')]+", text)) <= {"http://www.w3.org/2000/svg"}
    measured_page = tmp_path / "measured.html"
    measured_page.write_text(text.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    dom = chromium(tmp_path, "--dump-dom", measured_page.as_uri())
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom, re.S)
    assert found is not None, dom[-2000:]
    sections = {s["id"]: s for s in json.loads(found.group(1).replace("&quot;", '"'))}
    failed = next(s for k, s in sections.items() if k.endswith("test_explored"))
    passed = next(s for k, s in sections.items() if k.endswith("test_guarded"))
    # one lane per racer, each drawn with a size, one under the other
    assert [lane["racer"] for lane in failed["lanes"]] == ["0", "1"]
    assert all(lane["width"] > 0 and lane["height"] > 0 for lane in failed["lanes"])
    assert failed["lanes"][0]["y"] < failed["lanes"][1]["y"]
    # the breaking step is marked, and the schedule is there to copy
    assert failed["marked"] is not None and failed["marked"]["width"] > 0
    assert failed["schedule"] is not None and "0:SELECT runs" in failed["schedule"]
    assert failed["schedule"].startswith("schedule=[")
    assert failed["histogram_bars"] >= 1
    # a passed race: verdict and histogram, no timeline
    assert passed["lanes"] == [] and passed["schedule"] is None
    assert passed["histogram_bars"] == 1
    assert 'data-anomaly="phantom"' in dom
    shot = tmp_path / "racecheck-page.png"  # kept as the test's artifact
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1100,1500", page.as_uri())
    assert shot.stat().st_size > 10_000


def test_the_ini_key_names_the_page(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\nracecheck_html = page.html\n")
    pytester.makepyfile(test_session=SESSION)
    pytester.runpytest_inprocess("-k", "guarded").assert_outcomes(passed=1)
    assert "test_guarded" in (pytester.path / "page.html").read_text(encoding="utf-8")


def test_the_page_merges_xdist_workers(pytester: pytest.Pytester, run_tag: str) -> None:
    pytester.makepyfile(test_session=SESSION)
    result = pytester.runpytest_subprocess("-n", "2", "--racecheck-html=page.html")
    result.assert_outcomes(passed=1, failed=1)
    text = (pytester.path / "page.html").read_text(encoding="utf-8")
    assert "test_session.py::test_explored" in text and "test_session.py::test_guarded" in text
    assert text.count('class="lane"') == 2  # the failed race's two racers


def test_pytest_html_gets_the_timeline_as_an_extra(pytester: pytest.Pytester) -> None:
    pytest.importorskip("pytest_html")
    pytester.makepyfile(test_session=SESSION)
    result = pytester.runpytest_inprocess("--html=report.html", "--self-contained-html")
    result.assert_outcomes(passed=1, failed=1)
    # pytest-html keeps each test's extras in a JSON blob, HTML-escaped
    blob = html.unescape((pytester.path / "report.html").read_text(encoding="utf-8"))
    assert blob.count('<svg class=\\"timeline\\"') == 1  # the failed test's, not the passed one's
    assert "breaks here" in blob and "schedule=[" in blob


# Plain data in, HTML out ------------------------------------------------------------------


def _round(**anomaly: Any) -> dict[str, Any]:
    step = {"sql": "SELECT 1 FROM runs", "conn": 0, "kind": "read", "blocked_at_ms": None}
    racers = [
        {
            "racer": r,
            "outcome": "<b>created</b>",
            "error": "IntegrityError: <boom>" if r == 1 else None,
            "released_ms": 0.0,
            "took_ms": 2.0,
            "steps": [
                {
                    **step,
                    "name": "SELECT runs @ a.py:1",
                    "at_ms": 0.1,
                    "held_ms": 0.2,
                    "ran_ms": 0.5,
                }
            ],
        }
        for r in range(2)
    ]
    return {
        "index": 3,
        "why": "2 racers returned <b>",
        "racers": racers,
        "schedule": ["0:SELECT runs @ a.py:1", "1:SELECT runs @ a.py:1"],
        "check": None,
        "anomaly": anomaly or None,
    }


def test_timeline_escapes_what_racers_returned() -> None:
    page = html_report.failing_round_html(_round(), "x")
    assert "<b>created" not in page and "&lt;boom&gt;" in page
    assert page.count('class="lane"') == 2


def test_without_an_anomaly_the_first_raising_racer_is_marked() -> None:
    page = html_report.timeline_svg(_round(), "x")
    marked = re.findall(r'<g class="[^"]*marked[^"]*" data-racer="(\d)" data-step="(\d)"', page)
    assert marked == [("1", "1")]  # racer 1's result box, after its one step


def test_a_named_anomaly_marks_its_step() -> None:
    rnd = _round(name="phantom", adya="G2", why="both inserted", steps=[[0, 0]], marked=[0, 0])
    page = html_report.failing_round_html(rnd, "x")
    assert 'data-anomaly="phantom"' in page
    assert re.search(r'<g class="step read in-anomaly marked" data-racer="0" data-step="0"', page)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.tags.append(tag)


def test_the_page_parses_as_html() -> None:
    document = {
        "created": "now",
        "plugin_version": "0",
        "verdicts": {"failed": 1},
        "races": [
            {
                "test_id": "t.py::test",
                "verdict": "failed",
                "fn": "f",
                "mode": "explore",
                "search": "exhaustive",
                "rounds_run": 3,
                "rounds_requested": 5,
                "racers": 2,
                "histogram": [{"outcome": "a", "rounds": 3}],
                "failing_histogram": [{"outcome": "a", "rounds": 3}],
                "timings": {"elapsed_s": 1.0, "round_ms": {"p50": 1.0, "p99": 2.0, "max": 2.0}},
                "first_failure": _round(),
            }
        ],
    }
    parser = _Tags()
    parser.feed(html_report.render(document))
    assert parser.tags.count("section") == 1 and "svg" in parser.tags
