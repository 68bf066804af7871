# Shell functions shared by scripts/run, scripts/test and .ci/run.

# Debian packages the tests use as real peers and clients.
SYSTEM_PACKAGES=(swaks postfix msmtp openssl chromium chromium-driver)

find_python() {
    # Print a python executable of the given minor version, from PATH or pyenv.
    local version="$1" candidate
    # A pyenv shim on PATH exists even where it cannot run, so each candidate is run once.
    for candidate in "$HOME/.pyenv/versions/$version"*/bin/python "python$version"; do
        if "$candidate" -c "import sys; assert sys.version_info[:2] == tuple(map(int, '$version'.split('.')))" >/dev/null 2>&1; then
            command -v "$candidate"
            return
        fi
    done
    echo "Python $version was not found on PATH or under ~/.pyenv/versions; install it first." >&2
    exit 1
}

ensure_venv() {
    # Create the virtual environment and install mailhub with its test extras and the Django series.
    # A stamp of pyproject.toml and the Django range skips pip when nothing changed.
    local venv="$1" python="$2" django="$3"
    local stamp="$venv/.mailhub-install-stamp" wanted
    wanted="$(sha256sum pyproject.toml | cut -d' ' -f1) $django"
    if [[ ! -x "$venv/bin/python" ]]; then
        "$python" -m venv "$venv"
    fi
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
        return
    fi
    local log="$venv/pip-install.log"
    echo "Installing mailhub and its dependencies into $venv (a first install takes a few minutes)..." >&2
    # pip's output goes to a log that is printed only when the install fails.
    if ! { "$venv/bin/python" -m pip install --upgrade pip &&
        "$venv/bin/python" -m pip install -e ".[test]" "$django"; } >"$log" 2>&1; then
        cat "$log" >&2
        echo "Installing mailhub into $venv failed; the pip output is above." >&2
        exit 1
    fi
    echo "$wanted" >"$stamp"
}

ensure_system_packages() {
    # Install missing Debian packages when running as root; otherwise tests that need them skip.
    local missing=() package
    for package in "${SYSTEM_PACKAGES[@]}"; do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        return
    fi
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        echo "Missing Debian packages (tests that need them will skip): ${missing[*]}" >&2
        return
    fi
    # A failed install is reported, not fatal: the tests that need a package skip without it.
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
        echo "Installing ${missing[*]} with apt-get failed; tests that need them will skip." >&2
    fi
}

ensure_services() {
    # Start PostgreSQL and Redis on 127.0.0.1 when they are installed but not running.
    if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
        if command -v pg_ctlcluster >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]]; then
            pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
        fi
    fi
    if command -v redis-cli >/dev/null 2>&1 && ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
        if command -v redis-server >/dev/null 2>&1; then
            mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
            redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
                --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
        fi
    fi
}
