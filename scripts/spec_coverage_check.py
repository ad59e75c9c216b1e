"""Did the tests see every operation of openapi.yaml answer, and every answer it documents?

The test harness (tests/it/support/spec.rs) checks every answer it sees against the spec and,
when DIALBACK_SPEC_LEDGER_DIR is set, notes `METHOD TEMPLATE STATUS [callback status]` per answer
in that directory. This reads the notes and fails when an operation was never seen succeeding, an
operation that documents problem answers was never seen giving one, or a callback status was
never seen in an answer (in-flight ones included).

usage: spec_coverage_check.py SPEC LEDGER_DIR
"""

import pathlib
import sys

import yaml

spec = yaml.safe_load(pathlib.Path(sys.argv[1]).read_text())
seen = set()
statuses_seen = set()
for ledger in pathlib.Path(sys.argv[2]).glob("*.txt"):
    for line in ledger.read_text().splitlines():
        parts = line.split(" ")
        seen.add((parts[0], parts[1], int(parts[2])))
        if len(parts) > 3:
            statuses_seen.add(parts[3])

missing = []
for template, item in spec["paths"].items():
    for method, operation in item.items():
        if method not in ("get", "put", "post", "delete", "patch"):
            continue
        method = method.upper()
        answers = {status for (m, t, status) in seen if m == method and t == template}
        documented = [str(code) for code in operation["responses"]]
        if not any(200 <= status < 400 for status in answers):
            missing.append(f"{method} {template}: never seen succeeding")
        documents_problems = any(code[0] in "45" for code in documented)
        if documents_problems and not any(status >= 400 for status in answers):
            missing.append(f"{method} {template}: never seen answering a problem")

callback_statuses = spec["components"]["schemas"]["CallbackStatus"]["enum"]
for status in callback_statuses:
    if status not in statuses_seen:
        missing.append(f"a callback was never seen in status {status}")

for line in missing:
    print(f"spec coverage: {line}", file=sys.stderr)
print(f"spec coverage: {len(seen)} distinct answers seen, {len(missing)} gaps")
sys.exit(1 if missing else 0)
