#!/usr/bin/env bash
# The version matrix: the integration subset (tests/integration/test_queue.py and
# test_jobs.py) against the LOWEST and the NEWEST celery, kombu and weasyprint that
# pyproject.toml allows, each in its own virtualenv under .matrix/ (reused while its
# versions stay the same). Not part of `make test`: it downloads packages.
#
#   scripts/test_matrix.sh                 both sides
#   scripts/test_matrix.sh lowest          one side (lowest or newest)
#   PYTHON=python3.12 scripts/test_matrix.sh
#
# lowest: the three at their lowest allowed versions, everything else as pinned in
#         constraints.txt. newest: the three at their newest allowed versions, everything
#         else resolved fresh (what `pip install pdftasks` would get today).
# Versions come from `pip index versions <name>` filtered by pyproject.toml's ranges.
# Prints one line per side (PASS/FAIL) and exits non-zero if any side failed.
set -uo pipefail
cd "$(dirname "$0")/.."

root="${MATRIX_DIR:-.matrix}"
tests=(tests/integration/test_queue.py tests/integration/test_jobs.py)
sides=("$@")
(( ${#sides[@]} )) || sides=(lowest newest)
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  python=$(.venv/bin/python -c 'import sys; print(getattr(sys, "_base_executable", ""))' \
           2>/dev/null || true)
  [[ -x "$python" ]] || python=python3
fi
helper=.venv/bin/python
[[ -x "$helper" ]] || helper="$python"

# "<side> celery==X kombu==Y weasyprint==Z" for each side asked for.
plan=$("$helper" - "${sides[@]}" <<'PY'
import re
import subprocess
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

DISTS = ("celery", "kombu", "weasyprint")
with open("pyproject.toml", "rb") as f:
    deps = [Requirement(d) for d in tomllib.load(f)["project"]["dependencies"]]
ranges = {r.name.lower(): r.specifier for r in deps if r.name.lower() in DISTS}
picked = {}
for dist in DISTS:
    out = subprocess.run([sys.executable, "-m", "pip", "index", "versions", dist],
                         capture_output=True, text=True, check=True).stdout
    listed = re.search(r"Available versions: (.*)", out).group(1).split(", ")
    versions = []
    for text in listed:
        try:
            version = Version(text)
        except InvalidVersion:
            continue
        if not version.is_prerelease and version in ranges[dist]:
            versions.append(version)
    if not versions:
        sys.exit(f"no {dist} release matches {dist}{ranges[dist]}")
    picked[dist] = (min(versions), max(versions))
for side in sys.argv[1:]:
    if side not in ("lowest", "newest"):
        sys.exit(f"unknown side {side!r} (lowest or newest)")
    end = 0 if side == "lowest" else 1
    print(side, *(f"{dist}=={picked[dist][end]}" for dist in DISTS))
PY
) || { echo "test-matrix: cannot determine the versions" >&2; exit 2; }

mkdir -p "$root"
declare -A result
while read -r side pins; do
  venv="$root/$side"
  log="$root/$side.log"
  echo "== $side: $pins (venv $venv, log $log)"
  constraints=()
  if [[ "$side" == "lowest" ]]; then
    grep -viE '^(celery|kombu|weasyprint)==' constraints.txt > "$root/constraints-$side.txt"
    constraints=(-c "$root/constraints-$side.txt")
  fi
  stamp="$venv/.matrix-$(echo "$pins" | cat - pyproject.toml "${constraints[@]:1}" \
                         | sha256sum | cut -c1-16)"
  if [[ ! -f "$stamp" ]]; then
    rm -rf "$venv"
    # shellcheck disable=SC2086  # $pins: one requirement per word
    if ! { "$python" -m venv "$venv" \
           && "$venv/bin/python" -m pip install -q --upgrade pip \
           && "$venv/bin/python" -m pip install -q "${constraints[@]}" -e ".[redis]" \
                pytest pytest-timeout pypdf psutil $pins; } >"$log" 2>&1; then
      echo "   install failed (see $log)"
      result[$side]="FAIL (install)"
      continue
    fi
    touch "$stamp"
  fi
  "$venv/bin/python" -m pip list 2>/dev/null | grep -iE '^(celery|kombu|weasyprint) ' \
    | sed 's/^/   /'
  if "$venv/bin/python" -m pytest -q -p no:cacheprovider "${tests[@]}" >>"$log" 2>&1; then
    result[$side]="PASS"
  else
    result[$side]="FAIL (tests)"
  fi
  tail -n 1 "$log" | sed 's/^/   /'
done <<<"$plan"

status=0
echo "== test-matrix (${tests[*]})"
while read -r side pins; do
  echo "   $side: ${result[$side]:-not run}  ($pins)"
  [[ "${result[$side]:-}" == "PASS" ]] || status=1
done <<<"$plan"
exit $status
