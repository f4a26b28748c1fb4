#!/usr/bin/env bash
# The demo: an orchestrator and the example agents on this machine, with live progress.
#
#   bash scripts/demo.sh [agentmesh demo arguments...]
#
# Prepares .venv like scripts/test.sh, then runs `agentmesh demo`, which keeps its state in an
# embedded SQLite database. Redis is optional: when redis-server is installed (or can be, as
# root) the demo gets a local Redis on 127.0.0.1:6379, otherwise it runs on the in-memory
# cache. Set AGENTMESH_REDIS_URL yourself to choose, or to "" to run without Redis.
set -euo pipefail

# Defines the service and venv functions only; nothing in it runs when sourced.
# shellcheck source=scripts/test.sh
source "$(dirname "${BASH_SOURCE[0]}")/test.sh"

cd "$ROOT"
if [[ -z ${AGENTMESH_REDIS_URL+set} ]]; then
    if have_redis || is_root; then
        # A failing Redis must not stop the demo: run this part in a subshell, where die()
        # ends only the subshell.
        if (ensure_packages redis && ensure_redis 6379); then
            export AGENTMESH_REDIS_URL=redis://127.0.0.1:6379/0
        else
            warn "no Redis; the demo runs on the in-memory cache"
        fi
    else
        warn "redis-server is not installed; the demo runs on the in-memory cache"
    fi
fi
ensure_packages
ensure_venv
say "agentmesh demo $*${AGENTMESH_REDIS_URL:+ (Redis: $AGENTMESH_REDIS_URL)}"
exec "$VENV/bin/agentmesh" demo "$@"
