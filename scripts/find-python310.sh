#!/usr/bin/env bash
# Prints the path of a working Python 3.10 with venv support (the board's Python: PYNQ 3.0 images
# run 3.10), or nothing when this machine has none. The Makefile tests the host package under it.
# Looks at $HWFLOW_PYTHON310, python3.10 on the PATH, pyenv's versions, /usr/bin, /usr/local/bin.
set -u
candidates=("${HWFLOW_PYTHON310:-}" python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10)
roots=("${PYENV_ROOT:-$HOME/.pyenv}")
if command -v pyenv >/dev/null 2>&1; then roots+=("$(pyenv root 2>/dev/null)"); fi
for root in "${roots[@]}"; do
  for py in "$root"/versions/3.10*/bin/python3.10; do candidates+=("$py"); done
done
for py in "${candidates[@]}"; do
  [ -n "$py" ] || continue
  # a pyenv shim exists even when 3.10 is not selected: run it to know
  if "$py" -c 'import sys, ensurepip, venv; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1; then
    "$py" -c 'import sys; print(sys.executable)'
    exit 0
  fi
done
exit 0
