#!/usr/bin/env bash
# Set up pdftasks on Debian/Ubuntu: system libraries through apt (when root, else print the
# exact command), then a virtualenv in .venv with the package and its extras, at the versions
# pinned in constraints.txt.
#
#   scripts/setup.sh            runtime: WeasyPrint's libraries incl. libharfbuzz-subset0
#   scripts/setup.sh --test     also redis-server (the tests start their own instance)
set -euo pipefail
cd "$(dirname "$0")/.."

extras="redis,api,sqs,ops,documents,dev"
packages=(libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz0b libharfbuzz-subset0 fonts-dejavu-core
          shared-mime-info)
if [[ "${1:-}" == "--test" ]]; then
  packages+=(redis-server chromium qpdf)  # qpdf --check reads the document options' output
  extras+=",docs"   # `make test` builds the documentation too (`make docs`)
fi

missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$pkg")
done

python=""
for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
  if [[ -n "$candidate" ]] && command -v "$candidate" >/dev/null 2>&1 \
     && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python="$candidate"
    break
  fi
done
if [[ -z "$python" ]]; then
  missing+=(python3 python3-venv)
elif [[ ! -x .venv/bin/python ]] && ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
  missing+=(python3-venv)
fi

if (( ${#missing[@]} )); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing system packages. Install them with:" >&2
    echo "  sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
[[ -n "$python" ]] || python=python3

# Exact versions from constraints.txt (the lock file, `make lock`); reinstalled when it or
# pyproject.toml changes.
stamp=".venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)-${extras}"
if [[ ! -f "$stamp" ]]; then
  [[ -x .venv/bin/python ]] || "$python" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[${extras}]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi

.venv/bin/python - <<'PY'
from pdftasks.render import harfbuzz_subset_available
if not harfbuzz_subset_available():
    raise SystemExit("setup: WeasyPrint cannot load libharfbuzz-subset0 "
                     "(apt-get install libharfbuzz-subset0)")
print("setup: ok (WeasyPrint with HarfBuzz subsetting)")
PY
