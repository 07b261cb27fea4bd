"""The HTML report's look: its CSS and the script of its copy buttons.

Apart from the drawing (:mod:`pytest_racecheck.results.html`), which places things by the
race's times; these rules only colour and size them.
"""

PAGE_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d2330;
background:#fafbfc}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:0;word-break:break-all}
.meta{color:#5b6475;font-size:13px}
section.race{background:#fff;border:1px solid #dde2ea;border-left:6px solid #8a94a6;
border-radius:6px;padding:14px 18px;margin:16px 0}
section.failed{border-left-color:#d1242f}section.passed{border-left-color:#1f883d}
.badge{display:inline-block;border-radius:10px;padding:0 9px;font-size:12px;font-weight:600;
color:#fff;background:#8a94a6;margin-right:8px;vertical-align:2px}
.badge.failed{background:#d1242f}.badge.passed{background:#1f883d}
table.kv{border-collapse:collapse;font-size:13px;margin:8px 0}
table.kv td{padding:1px 14px 1px 0}table.kv td:first-child{color:#5b6475}
details{margin:6px 0}summary{cursor:pointer;color:#3d4a61}
"""
PICTURE_CSS = """
.racecheck .anomaly{background:#fff4e5;border:1px solid #f0c48a;border-radius:4px;
padding:6px 10px;margin:10px 0}
.racecheck .anomaly.unclassified{background:#f3f4f6;border-color:#d0d5dd}
.racecheck pre.schedule{background:#0d1117;color:#e6edf3;padding:10px 12px;border-radius:4px;
overflow-x:auto;font-size:12.5px;margin:4px 0}
.racecheck button.copy{font-size:12px;margin:4px 0}
.racecheck svg text{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:11px}
.racecheck svg .lane-label{font-family:system-ui,sans-serif;font-size:12px;font-weight:600}
.racecheck svg .axis{stroke:#c4cad4}.racecheck svg .tick{fill:#7a8394;font-size:10px}
.racecheck svg .held{stroke:#b8bfcc;stroke-width:2;stroke-dasharray:2 2}
.racecheck svg rect.read{fill:#cfe3ff;stroke:#4a86d8}
.racecheck svg rect.write{fill:#ffd9b3;stroke:#d9822b}
.racecheck svg rect.commit{fill:#c9efd3;stroke:#2f9e55}
.racecheck svg rect.txn{fill:#e4e7ec;stroke:#98a2b3}
.racecheck svg rect.lock{fill:#e6dcff;stroke:#7b5cd6}
.racecheck svg rect.code{fill:#f1f3f6;stroke:#c4cad4}
.racecheck svg rect.wait{stroke:#b42318}
.racecheck svg rect.result{fill:#e9f7ee;stroke:#2f9e55}
.racecheck svg rect.result.raised{fill:#fde7e9;stroke:#d1242f}
.racecheck svg rect.in-anomaly{stroke-width:2}
.racecheck svg rect.marked{stroke:#d1242f;stroke-width:3}
.racecheck svg .mark-label{fill:#d1242f;font-weight:700}
.racecheck svg .point-label{fill:#3d4a61;font-size:10px}
.racecheck .legend span{display:inline-block;margin-right:12px;font-size:12px}
.racecheck .legend i{display:inline-block;width:14px;height:10px;border:1px solid;
margin-right:4px;vertical-align:-1px}
"""
"""The timeline's own rules, all under ``.racecheck``: the picture also goes into pages of
other tools (pytest-html), whose styles they must not touch."""

COPY_JS = (
    "function racecheckCopy(id){var t=document.getElementById(id).textContent;"
    "if(navigator.clipboard){navigator.clipboard.writeText(t)}}"
)
