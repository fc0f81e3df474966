#!/usr/bin/env bash
# Mutation testing of the money core (not part of the regular test run): mutmut changes one thing at
# a time in money.py, permissions.py, services/webhook_signing.py and services/balance_manager.py
# (configured in pyproject.toml [tool.mutmut]), runs the tests that cover it, and counts the mutants
# no test noticed. Every survivor must be listed, with the reason it is equivalent, in
# bench/mutation-equivalent.md.
#
#   bench/mutation.sh                     all four modules (balance_manager's tests need PostgreSQL)
#   bench/mutation.sh 'jivapay.money*'    one module (a mutmut name pattern)
#   bench/mutation.sh NAME...             only these mutants (e.g. the survivors `mutmut results`
#                                         lists, after adding tests)
#
# Uses DATABASE_URL / REDIS_URL like the tests. Results stay in mutants/ (git-ignored). A pattern
# re-tests every mutant it matches, even those with a result; exact names re-test only those; a
# changed function's mutants are regenerated and start untested. balance_manager's 871 mutants each
# create a database and run PostgreSQL-backed tests: about 90 minutes on the 2-core machine shared
# with other work, so after a first full run re-test by name.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap
.venv/bin/python -m pip install --quiet "mutmut==3.8.1"
patterns=("$@")
[ ${#patterns[@]} -gt 0 ] || patterns=("jivapay.money*" "jivapay.permissions*" "jivapay.services.webhook_signing*" "jivapay.services.balance_manager*")
.venv/bin/python -m mutmut run "${patterns[@]}" || true
.venv/bin/python -m mutmut results --all true > mutants/results.txt || true
.venv/bin/python - <<'PY'
import collections, pathlib, re
counts = collections.defaultdict(collections.Counter)
for line in pathlib.Path("mutants/results.txt").read_text().splitlines():
    m = re.match(r"\s*(jivapay\.[\w.]+)\.x_\w+__mutmut_\d+: (.+)$", line)
    if m:
        counts[m.group(1)][m.group(2)] += 1
print(f"{'module':45} {'mutants':>8} {'killed':>7} {'survived':>9} {'not run':>8} {'score':>6}")
for module, c in sorted(counts.items()):
    total = sum(c.values())
    run = total - c["not checked"]
    score = f"{100 * c['killed'] / run:.0f} %" if run else "-"
    print(f"{module:45} {total:>8} {c['killed']:>7} {c['survived']:>9} {c['not checked']:>8} {score:>6}")
PY
echo "survivors: .venv/bin/python -m mutmut results; one diff: .venv/bin/python -m mutmut show NAME"
