#!/usr/bin/env bash
# The benchmarks: real orchestrator and agent processes over mTLS on 127.0.0.1 (see
# benchmarks/README.md). Not part of CI; takes three minutes on two cores, plus 5-15 for agents1000.
#
#   bash scripts/bench.sh                            # every benchmark, on this checkout's src/
#   bash scripts/bench.sh --only critical_path       # some of them
#   bash scripts/bench.sh --rev HEAD                 # agentmesh as committed at a git revision
#   bash scripts/bench.sh --profile py-spy           # also profile each orchestrator
#   bash scripts/bench.sh --database postgresql      # the orchestrator on PostgreSQL (default sqlite)
#   bash scripts/bench.sh --database both            # each on SQLite, then PostgreSQL, side by side
#   bash scripts/bench.sh --only agents1000 --agents 200 --steps 2000   # a smaller agents1000
#
# Reuses .venv (make it with scripts/test.sh). --rev REV benchmarks the src/ of REV (exported
# with git archive into var/bench/src-<commit>) instead of the work tree, so that edits in
# progress do not end up in the numbers; the benchmark code itself is always this checkout's.
# Every other argument goes to benchmarks/run.py (--help lists them).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="$ROOT/.venv/bin/python"

die() {
    printf '%s: error: %s\n' "${0##*/}" "$*" >&2
    exit 1
}

[[ -x $PYTHON ]] || die "no virtualenv at $ROOT/.venv; run: bash scripts/test.sh"

args=()
while (($#)); do
    case $1 in
    --rev)
        (($# >= 2)) || die "--rev needs a git revision"
        commit=$(git -C "$ROOT" rev-parse --verify --short "$2^{commit}") ||
            die "unknown revision: $2"
        src="$ROOT/var/bench/src-$commit"
        if [[ ! -d $src/src/agentmesh ]]; then
            rm -rf "$src"
            mkdir -p "$src"
            git -C "$ROOT" archive "$commit" src | tar -x -C "$src"
        fi
        export PYTHONPATH="$src/src${PYTHONPATH:+:$PYTHONPATH}"
        printf '==> benchmarking agentmesh at %s (%s)\n' "$2" "$commit"
        shift 2
        ;;
    *)
        args+=("$1")
        shift
        ;;
    esac
done

cd "$ROOT"
exec "$PYTHON" benchmarks/run.py "${args[@]}"
