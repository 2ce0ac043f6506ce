#!/usr/bin/env bash
# Make a fresh clone runnable: the system packages the local stack needs (as root, with apt-get,
# when missing) and .venv with tastemaker and its test extra. Idempotent.
#   bash scripts/bootstrap.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v openssl >/dev/null || missing+=(openssl)  # the Redis TLS test makes certificates
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
    if [[ $EUID -ne 0 ]]; then
        echo "error: ${missing[*]} missing and not root; install them first" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
    # Where systemd runs, the Debian package starts a Redis on 6379; the stack runs its own.
    if [[ " ${missing[*]} " == *" redis-server "* && -d /run/systemd/system ]]; then
        systemctl disable --now redis-server || true
    fi
fi

if [[ ! -x .venv/bin/tastemaker ]] || [[ pyproject.toml -nt .venv/bin/tastemaker ]]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[test]'
    touch .venv/bin/tastemaker
fi
# compile the co-occurrence kernels once (numba caches them in models/__pycache__): without it,
# the first process to learn or score spends ~30 s compiling, every worker started at once too
.venv/bin/python -c 'from models.cooccurrence import warm_up; warm_up(); from models.sentiment import warm_up; warm_up()'
