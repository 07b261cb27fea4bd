"""Size and opening time of the HTML report (docs/benchmarks.md, "The HTML report").

    .venv/bin/python benchmarks/html_page.py            # about a minute; needs chromium

Runs a pytest session in a temporary directory with two races of 8 racers and 50 rounds on
SQLite: a check-then-insert explored (PCT, so it fails and its first failing round is drawn,
a statement per step) and the same code guarded with ``BEGIN IMMEDIATE`` in stress rounds
(it passes). The page is written with ``--racecheck-html``. Then a worst case made of plain
data: a failing round of 8 racers with the most steps a racer records (200 each, SQL of 200
characters). Each page is opened ``--opens`` times in headless Chromium (a fresh profile each
time); the page itself reports, from the browser's navigation timing, how long it took from
the start of the navigation to the end of its load event, which is what "opens" means here.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytest_racecheck.results import html as html_report
from pytest_racecheck.wire.outcome import MAX_STEPS

ROOT = Path(__file__).resolve().parent.parent

SESSION = """
import sqlite3


def attempt(path, immediate):
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
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
        attempt, db.path, immediate, processes=8, timeout=600,
        reset=lambda: db.execute("DELETE FROM runs"),
        check=lambda: db.scalar("SELECT count(*) FROM runs") == 1,
        **how,
    )


def test_explored(race, sqlite_db):
    _race(race, sqlite_db, False, explore=50, seed=1).assert_exactly_one("created")


def test_guarded(race, sqlite_db):
    _race(race, sqlite_db, True, rounds=50).assert_exactly_one("created")
"""

MEASURE = """<script>
window.addEventListener("load", function () {
  setTimeout(function () {
    var n = performance.getEntriesByType("navigation")[0];
    var pre = document.createElement("pre");
    pre.id = "opened-ms";
    pre.textContent = String(n.loadEventEnd - n.startTime);
    document.body.appendChild(pre);
  }, 0);
});
</script>"""


def chromium_opens(page: Path, opens: int) -> tuple[list[float], list[float]]:
    """(load times reported by the page, wall times of the whole browser run), in ms."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("chromium is not installed (Debian: apt-get install chromium)")
    measured = page.with_name(page.stem + "-measured.html")
    measured.write_text(
        page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8"
    )
    loads, walls = [], []
    for i in range(opens):
        profile = page.parent / f"profile-{page.stem}-{i}"
        started = time.perf_counter()
        dom = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--dump-dom",
                measured.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        walls.append((time.perf_counter() - started) * 1000)
        found = re.search(r'<pre id="opened-ms">([\d.]+)</pre>', dom)
        assert found is not None, dom[-500:]
        loads.append(float(found.group(1)))
    return loads, walls


def worst_case() -> dict:
    sql = "SELECT " + ", ".join(f"c{i}" for i in range(40)) + " FROM runs WHERE id = 1"
    racers = []
    for r in range(8):
        steps = [
            {
                "name": f"SELECT runs @ app.py:{100 + i}",
                "sql": sql[:200],
                "conn": 0,
                "kind": "read",
                "at_ms": i * 1.0 + r * 0.1,
                "held_ms": 0.4,
                "ran_ms": 0.5,
                "blocked_at_ms": None,
            }
            for i in range(MAX_STEPS)
        ]
        racers.append(
            {
                "racer": r,
                "outcome": "created",
                "error": None,
                "released_ms": 0.0,
                "took_ms": MAX_STEPS * 1.0 + 1,
                "steps": steps,
            }
        )
    rnd = {
        "index": 1,
        "why": "8 racers returned 'created'",
        "racers": racers,
        "schedule": [f"{i % 8}:SELECT runs @ app.py:{100 + i // 8}" for i in range(8 * MAX_STEPS)],
        "check": "check() returned False",
        "anomaly": {"name": "unclassified", "adya": None, "why": None, "steps": [], "marked": None},
    }
    race = {
        "test_id": "bench.py::test_worst_case",
        "verdict": "failed",
        "fn": "attempt",
        "mode": "explore",
        "search": "pct",
        "rounds_run": 50,
        "rounds_requested": 50,
        "racers": 8,
        "histogram": [{"outcome": f"outcome {i}", "rounds": 5} for i in range(10)],
        "failing_histogram": [{"outcome": "outcome 0", "rounds": 5}],
        "timings": {"elapsed_s": 10.0},
        "first_failure": rnd,
    }
    return {"created": "now", "plugin_version": "bench", "verdicts": {"failed": 1}, "races": [race]}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--opens", type=int, default=5, help="browser runs per page")
    args = parser.parse_args()
    print(f"python {platform.python_version()}, {platform.machine()}")
    with tempfile.TemporaryDirectory(prefix="racecheck-html-bench-") as tmp:
        work = Path(tmp)
        (work / "test_session.py").write_text(SESSION, encoding="utf-8")
        (work / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "--racecheck-html=page.html",
                "--racecheck-report=report.json",
            ],
            cwd=work,
            capture_output=True,
            check=False,
        )
        print(f"session: {time.perf_counter() - started:.1f} s")
        report = json.loads((work / "report.json").read_text())
        explored = next(r for r in report["races"] if r["test_id"].endswith("test_explored"))
        assert explored["first_failure"], "the explored race did not fail"
        steps = sum(len(r["steps"]) for r in explored["first_failure"]["racers"])
        pages = [("session: 2 races of 8 racers x 50 rounds", work / "page.html", steps)]
        worst = work / "worst.html"
        worst.write_text(html_report.render(worst_case()), encoding="utf-8")
        pages.append(("worst case: 8 racers x 200 steps", worst, 8 * MAX_STEPS))
        for label, page, n in pages:
            loads, walls = chromium_opens(page, args.opens)
            print(
                f"{label}: {page.stat().st_size / 1024:.1f} KiB, {n} steps drawn; "
                f"load event after {statistics.median(loads):.0f} ms median "
                f"(max {max(loads):.0f}); whole browser run {statistics.median(walls):.0f} ms"
            )


if __name__ == "__main__":
    main()
