#!/usr/bin/env bash
# Idempotent machine set-up for BareCount: Debian packages, cargo-pgrx at the version the
# workspace pins, and `cargo pgrx init` for the system Postgres 15. A second run only checks.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

APT_PACKAGES=(postgresql-15 postgresql-server-dev-15 postgresql-client-15 libclang-dev clang
              sudo pkg-config libssl-dev make python3 python3-venv ca-certificates openssl sqlsmith
              postgresql-15-cron chromium chromium-driver)

# --- can this machine be served? ------------------------------------------------------------
missing=()
os_release="${BARECOUNT_OS_RELEASE:-/etc/os-release}"   # overridable so the refusal can be tested
if [ -r "$os_release" ]; then
    . "$os_release"
    if [ "${ID:-}" != debian ] || [ "${VERSION_ID:-}" != 12 ]; then
        missing+=("Debian 12 (found ${PRETTY_NAME:-unknown}); the packages below come from Debian 12's archive")
    fi
else
    missing+=("$os_release (cannot tell the distribution; Debian 12 is required)")
fi
command -v cargo >/dev/null || missing+=("cargo (install Rust 1.95 with rustup)")
if command -v rustc >/dev/null; then
    rv="$(rustc --version | awk '{print $2}')"
    if [ "$(printf '%s\n1.95.0\n' "$rv" | sort -V | head -n1)" != 1.95.0 ]; then
        missing+=("Rust >= 1.95 (found $rv)")
    fi
fi
if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
    missing+=("root or sudo (to install Debian packages)")
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: this machine cannot run BareCount yet; missing:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
fi
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

# --- Debian packages --------------------------------------------------------------------------
need=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    say "installing Debian packages: ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
    say "Debian packages: present"
fi
[ -x "$PG_CONFIG" ] || die "$PG_CONFIG is missing after installing postgresql-server-dev-15"
id postgres >/dev/null 2>&1 || die "user postgres is missing after installing postgresql-15"

# --- cargo-pgrx at exactly the pinned version -------------------------------------------------
want="$(sed -n 's/^pgrx = "=\([0-9.]*\)".*/\1/p' "$ROOT/Cargo.toml")"
[ -n "$want" ] || die "cannot read the pgrx version from Cargo.toml (expected pgrx = \"=X.Y.Z\")"
have="$(cargo pgrx --version 2>/dev/null | awk '{print $2}' || true)"
if [ "$have" != "$want" ]; then
    say "installing cargo-pgrx $want (found: ${have:-none}); takes a few minutes"
    cargo install cargo-pgrx --version "$want" --locked --quiet
else
    say "cargo-pgrx $want: present"
fi

# --- pgrx init against the system Postgres 15 -------------------------------------------------
if ! grep -qs "pg15 = \"$PG_CONFIG\"" "$HOME/.pgrx/config.toml"; then
    say "cargo pgrx init --pg15 $PG_CONFIG"
    cargo pgrx init --pg15 "$PG_CONFIG" >/dev/null
else
    say "pgrx init for pg15: done"
fi

# `cargo pgrx install` writes into Postgres's own directories.
for d in "$($PG_CONFIG --sharedir)/extension" "$($PG_CONFIG --pkglibdir)"; do
    [ -w "$d" ] || die "$d is not writable; run as root (or with write access) to install the extension"
done

# --- Python Flight clients (tests and the read benchmark use them from PyPI) -------------------
PY_VENV="${BARECOUNT_PY_VENV:-$HOME/.cache/barecount/py-venv}"
PY_PINS=(pyarrow==26.0.1 adbc-driver-manager==1.13.0 adbc-driver-flightsql==1.13.0
         adbc-driver-postgresql==1.13.0 standardwebhooks==1.1.0)
if ! "$PY_VENV/bin/python" - "${PY_PINS[@]}" 2>/dev/null <<'PY'
import sys
from importlib.metadata import version
sys.exit(any(version(p.split("==")[0]) != p.split("==")[1] for p in sys.argv[1:]))
PY
then
    say "installing ${PY_PINS[*]} into $PY_VENV"
    python3 -m venv "$PY_VENV"
    "$PY_VENV/bin/pip" install --quiet "${PY_PINS[@]}"
else
    say "Python Flight clients: present"
fi

# --- dbt (the example project under sql/dbt is run by the tests) ------------------------------
DBT_VENV="${BARECOUNT_DBT_VENV:-$HOME/.cache/barecount/dbt-venv}"
if ! "$DBT_VENV/bin/dbt" --version 2>/dev/null | grep -q "installed: 1.11.16"; then
    say "installing dbt-core 1.11.16 and dbt-postgres 1.11.0 into $DBT_VENV"
    python3 -m venv "$DBT_VENV"
    "$DBT_VENV/bin/pip" install --quiet "dbt-core==1.11.16" "dbt-postgres==1.11.0"
else
    say "dbt 1.11.16: present"
fi
