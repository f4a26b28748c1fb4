#!/usr/bin/env bash
# The test command: services, virtualenv, then every gate in order, stopping at the first failure.
#
#   bash scripts/test.sh                          # everything, exactly as CI runs it
#   bash scripts/test.sh -- -k scheduler -x       # extra pytest arguments, after the gates
#   PYTEST_ARGS="tests/engine --no-cov" bash scripts/test.sh
#
# Safe to run again and again. On a fresh Debian machine run it as root: it installs
# redis-server, postgresql, chromium, nodejs, npm and python3-venv when they are missing, starts Redis and
# PostgreSQL when they are down, and creates .venv. AGENTMESH_TEST_REDIS_URL / AGENTMESH_TEST_POSTGRES_URL
# set beforehand point the tests elsewhere, and the script then leaves that service alone.
#
# A narrowed pytest run still gates coverage at 85%; add --no-cov to the pytest arguments to skip.
# pytest runs the test files in AGENTMESH_TEST_WORKERS processes (pytest-xdist, default 2, one
# per core; 0 runs them in pytest's own process), each file whole in one of them.
# Sourcing this file (scripts/demo.sh does) only defines the functions; nothing runs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PG_ARGS=(-h 127.0.0.1 -p 5432 -U postgres -w)
DEFAULT_REDIS_URL="redis://127.0.0.1:6379/15"
DEFAULT_POSTGRES_URL="postgresql+asyncpg://postgres@127.0.0.1:5432/test"
APT_UPDATED=0

say() { printf '==> %s\n' "$*"; }
warn() { printf '%s: warning: %s\n' "${0##*/}" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "${0##*/}" "$*" >&2
    exit 1
}
is_root() { [[ $(id -u) -eq 0 ]]; }

# wait_for SECONDS COMMAND...: true once COMMAND succeeds, false if it never does in time.
wait_for() {
    local seconds=$1 i
    shift
    for ((i = 0; i < seconds * 4; i++)); do
        "$@" && return 0
        sleep 0.25
    done
    return 1
}

# apt_install PACKAGE...: install Debian packages (root only), running apt-get update once.
apt_install() {
    is_root || die "missing $*; run this script as root, or: sudo apt-get install -y $*"
    command -v apt-get >/dev/null || die "missing $* and this is no Debian system: install them"
    export DEBIAN_FRONTEND=noninteractive
    if ((APT_UPDATED == 0)); then
        say "apt-get update"
        apt-get update -qq
        APT_UPDATED=1
    fi
    say "apt-get install -y --no-install-recommends $*"
    # -qq still lets dpkg print a line per unpacked file: errors go to stderr regardless.
    apt-get install -y -qq --no-install-recommends "$@" </dev/null >/dev/null
}

have_redis() { command -v redis-server >/dev/null && command -v redis-cli >/dev/null; }
have_postgres() {
    command -v pg_ctlcluster >/dev/null && command -v pg_isready >/dev/null &&
        command -v psql >/dev/null && compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}
# The dashboard's browser test drives Debian's chromium (Playwright never downloads one).
have_chromium() { command -v chromium >/dev/null; }
# The TypeScript SDK's tests (sdks/typescript) and the cross-language test run on Node.js.
have_node() { command -v node >/dev/null && command -v npm >/dev/null; }
# Debian's python3 lacks venv/ensurepip until python3-venv is installed.
have_python() {
    command -v python3 >/dev/null && python3 -c 'import ensurepip, venv' 2>/dev/null
}

# ensure_packages [redis] [postgres] [chromium] [node]: install what the named services, the
# browser test, the TypeScript SDK and the venv need.
ensure_packages() {
    local want missing=()
    for want in "$@"; do
        case $want in
            redis) have_redis || missing+=(redis-server) ;;
            postgres) have_postgres || missing+=(postgresql) ;;
            chromium) have_chromium || missing+=(chromium) ;;
            node) have_node || missing+=(nodejs npm) ;;
        esac
    done
    if [[ ! -x $VENV/bin/python ]] && ! have_python; then
        missing+=(python3 python3-venv)
    fi
    if ((${#missing[@]} > 0)); then
        apt_install "${missing[@]}"
    fi
}

redis_up() { redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null | grep -q PONG; }

# ensure_redis [PORT]: a Redis answering on 127.0.0.1:PORT (6379), started if it is down.
ensure_redis() {
    local port=${1:-6379} log=/var/log/redis/ci.log
    [[ $port == 6379 ]] || log=/var/log/redis/ci-$port.log
    redis_up "$port" && return 0
    say "starting Redis on 127.0.0.1:$port"
    mkdir -p /var/lib/redis /var/log/redis ||
        die "cannot create /var/lib/redis and /var/log/redis: run as root or start Redis yourself"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$port" --save "" \
        --appendonly no --dir /var/lib/redis --logfile "$log" >/dev/null ||
        die "redis-server did not start (log: $log)"
    if ! wait_for 20 redis_up "$port"; then
        tail -n 20 "$log" >&2 || true
        die "Redis on 127.0.0.1:$port does not answer PING (log: $log)"
    fi
}

pg_version() {
    local v
    v=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)
    [[ -n $v ]] || v=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
    printf '%s\n' "$v"
}
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432; }
pg_trusts() { psql "${PG_ARGS[@]}" -d postgres -tAc 'select 1' >/dev/null 2>&1; }

# pg_allow_trust VERSION: let user postgres in over TCP from loopback without a password.
# Debian's default pg_hba.conf asks for a password there; the tests connect without one.
pg_allow_trust() {
    local version=$1 hba
    hba=/etc/postgresql/$version/main/pg_hba.conf
    is_root || die "PostgreSQL refuses postgres@127.0.0.1 without a password; as root this script would allow it in $hba"
    [[ -f $hba ]] || die "no $hba"
    say "allowing trust auth for 127.0.0.1 and ::1 in $hba"
    # pg_hba.conf is first match wins, so the trust lines go on top. Rewrite in place so the
    # file keeps its owner and mode.
    local tmp
    tmp=$(mktemp)
    {
        echo "# Added by agentmesh scripts/test.sh: tests connect as postgres over loopback, no password."
        echo "host    all    all    127.0.0.1/32    trust"
        echo "host    all    all    ::1/128         trust"
        cat "$hba"
    } >"$tmp"
    cat "$tmp" >"$hba"
    rm -f "$tmp"
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload
}

# ensure_postgres: PostgreSQL on 127.0.0.1:5432, user postgres by trust, database test.
ensure_postgres() {
    local version
    version=$(pg_version)
    [[ -n $version ]] || die "no PostgreSQL version under /usr/lib/postgresql"
    if ! pg_up; then
        is_root || die "PostgreSQL is not running on 127.0.0.1:5432; start it, or run as root"
        if [[ ! -d /etc/postgresql/$version/main ]]; then
            say "creating PostgreSQL $version cluster main"
            pg_createcluster "$version" main
        fi
        say "starting PostgreSQL $version"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start
        wait_for 30 pg_up || die "PostgreSQL $version does not accept connections on 127.0.0.1:5432"
    fi
    if ! pg_trusts; then
        pg_allow_trust "$version"
        wait_for 10 pg_trusts || die "still cannot connect: psql ${PG_ARGS[*]} -d postgres"
    fi
    if [[ $(psql "${PG_ARGS[@]}" -d postgres -tAc "select 1 from pg_database where datname = 'test'") != 1 ]]; then
        say "creating database test"
        createdb "${PG_ARGS[@]}" test
    fi
}

# ensure_venv: .venv with the project installed editable, with its dev extras. The install is
# skipped while pyproject.toml is unchanged since the last one and agentmesh still imports.
ensure_venv() {
    local stamp=$VENV/.agentmesh-pyproject.sha256 want
    if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        say "creating .venv"
        python3 -m venv --clear "$VENV"
    fi
    want=$(sha256sum "$ROOT/pyproject.toml" | cut -d ' ' -f 1)
    if [[ -f $stamp && $(<"$stamp") == "$want" ]] &&
        "$VENV/bin/python" -c 'import agentmesh' >/dev/null 2>&1; then
        return 0
    fi
    say "pip install -e '.[dev]'"
    (cd "$ROOT" && "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]')
    printf '%s\n' "$want" >"$stamp"
}

# Subprocess coverage. Tests start orchestrators and agents as child processes; their coverage
# counts too. A .pth file in the venv starts coverage in every Python process whose environment
# carries AGENTMESH_COVERAGE_SUBPROCESS (the config file), except pytest itself, the direct
# child of this script, and its xdist workers (tests/conftest.py points the variable at pytest
# for them): pytest-cov measures those, and two tracers in one process would fight. Children write .coverage.<host>.<pid>.* beside COVERAGE_FILE; pytest-cov combines them
# with its own data before it reports and checks --cov-fail-under.
COVERAGE_PTH='import os; exec("if os.environ.get(\"AGENTMESH_COVERAGE_SUBPROCESS\") and str(os.getppid()) != os.environ.get(\"AGENTMESH_COVERAGE_PYTEST_PARENT\"):\n os.environ[\"COVERAGE_PROCESS_START\"] = os.environ[\"AGENTMESH_COVERAGE_SUBPROCESS\"]\n import coverage\n coverage.process_startup()")'

install_coverage_pth() {
    local site
    site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
    if [[ ! -f $site/agentmesh_coverage.pth || $(<"$site/agentmesh_coverage.pth") != "$COVERAGE_PTH" ]]; then
        printf '%s\n' "$COVERAGE_PTH" >"$site/agentmesh_coverage.pth"
    fi
}

GATE=setup
NARROWED=

gate() {
    GATE=$1
    shift
    say "$GATE"
    "$@"
}

# junit_counts FILE: "TESTS ERRORS" of a pytest JUnit XML report, nothing if it is unreadable.
junit_counts() {
    "$VENV/bin/python" - "$1" <<'PY' 2>/dev/null || true
import sys
import xml.etree.ElementTree as ET

suites = list(ET.parse(sys.argv[1]).getroot().iter("testsuite"))
print(sum(int(s.get("tests", 0)) for s in suites), sum(int(s.get("errors", 0)) for s in suites))
PY
}

run_pytest() {
    local rc junit counts extra=()
    read -r -a extra <<<"${PYTEST_ARGS:-}"
    extra+=("$@")
    GATE=pytest
    say "pytest ${extra[*]}"
    rm -f "$ROOT"/.coverage "$ROOT"/.coverage.*
    junit=$(mktemp "${TMPDIR:-/tmp}/agentmesh-pytest.XXXXXX")
    set +e
    COVERAGE_FILE="$ROOT/.coverage" \
        AGENTMESH_COVERAGE_SUBPROCESS="$ROOT/pyproject.toml" \
        AGENTMESH_COVERAGE_PYTEST_PARENT=$$ \
        "$VENV/bin/python" -m pytest -p no:cacheprovider --junit-xml="$junit" \
        -n "${AGENTMESH_TEST_WORKERS:-2}" --dist loadfile \
        --cov=agentmesh --cov-report=term --cov-fail-under=85 "${extra[@]}"
    rc=$?
    set -e
    counts=$(junit_counts "$junit")
    rm -f "$junit"
    # pytest says 5 when it collected nothing, but pytest-cov turns that into 1 when coverage
    # also fails (it always does then), so the report's count decides too.
    if ((rc == 5)) || [[ $rc != 0 && $counts == "0 0" ]]; then
        echo "pytest ran no tests: a run without tests counts as a failure" >&2
        return 5
    fi
    if compgen -G "$ROOT/.coverage.*" >/dev/null; then
        warn "coverage data arrived after pytest reported: a child process outlived its test"
    fi
    return "$rc"
}

finish() {
    local rc=$?
    if ((rc == 0)); then
        echo "test.sh: PASSED: protos, ruff, flake8, mypy, sphinx, npm test and pytest${NARROWED:+ ($NARROWED)}"
    else
        echo "test.sh: FAILED at $GATE (exit $rc)"
    fi
}

main() {
    local pytest_args=()
    while (($# > 0)); do
        case $1 in
            --) shift; pytest_args=("$@"); break ;;
            -h | --help)
                awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
                return 0
                ;;
            *) die "unknown argument '$1'; pytest arguments go after --" ;;
        esac
    done
    NARROWED="${PYTEST_ARGS:-}${PYTEST_ARGS:+ }${pytest_args[*]}"
    NARROWED=${NARROWED% }
    [[ -z $NARROWED ]] || NARROWED="pytest narrowed to: $NARROWED"
    trap finish EXIT
    cd "$ROOT"

    : "${AGENTMESH_TEST_REDIS_URL:=}" "${AGENTMESH_TEST_POSTGRES_URL:=}"
    local services=()
    [[ -n $AGENTMESH_TEST_REDIS_URL ]] || services+=(redis)
    [[ -n $AGENTMESH_TEST_POSTGRES_URL ]] || services+=(postgres)
    ensure_packages "${services[@]}" chromium node
    if [[ -z $AGENTMESH_TEST_REDIS_URL ]]; then
        ensure_redis 6379
        AGENTMESH_TEST_REDIS_URL=$DEFAULT_REDIS_URL
    fi
    if [[ -z $AGENTMESH_TEST_POSTGRES_URL ]]; then
        ensure_postgres
        AGENTMESH_TEST_POSTGRES_URL=$DEFAULT_POSTGRES_URL
    fi
    export AGENTMESH_TEST_REDIS_URL AGENTMESH_TEST_POSTGRES_URL
    ensure_venv
    install_coverage_pth
    export VIRTUAL_ENV=$VENV PATH="$VENV/bin:$PATH"

    local dirs=() d
    for d in src tests scripts benchmarks; do
        [[ -d $d ]] && dirs+=("$d")
    done

    gate "protos: scripts/gen_protos.py --check" python scripts/gen_protos.py --check
    gate "ruff check ${dirs[*]}" ruff check "${dirs[@]}"
    gate "ruff format --check ${dirs[*]}" ruff format --check "${dirs[@]}"
    gate "flake8 src/" flake8 src/
    gate "mypy --strict src/" mypy --strict src/
    gate "mypy src/" mypy src/
    gate "sphinx-build docs" sphinx-build -q -W --keep-going -b html docs docs/_build/html
    # From the lockfile; the SDK's tests start `agentmesh serve` from .venv. pytest's
    # cross-language test runs the SDK's reference agent from these node_modules too.
    gate "npm ci (sdks/typescript)" npm --prefix sdks/typescript ci --no-audit --no-fund
    gate "npm test (sdks/typescript)" npm --prefix sdks/typescript test
    run_pytest "${pytest_args[@]}"
    GATE=finished
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
