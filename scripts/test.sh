#!/usr/bin/env bash
# Every BareCount test, from a fresh machine: set-up, fmt, clippy, unit tests, pgrx tests, then
# end-to-end tests against a throwaway Postgres cluster and a barecount-flight server.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"
T0=$SECONDS

step "set-up" "$ROOT/scripts/setup.sh"

refuses_unsupported_machine() {
    local fake out
    fake="$(mktemp)"
    printf 'ID=ubuntu\nVERSION_ID="24.04"\nPRETTY_NAME="Ubuntu 24.04"\n' >"$fake"
    if out="$(BARECOUNT_OS_RELEASE="$fake" "$ROOT/scripts/setup.sh" 2>&1)"; then
        rm -f "$fake"; die "setup.sh accepted Ubuntu 24.04"
    fi
    rm -f "$fake"
    grep -q "missing:" <<<"$out" && grep -q "Debian 12 (found Ubuntu 24.04)" <<<"$out" \
        || die "setup.sh refused without saying what is missing: $out"
}
step "set-up refuses an unsupported machine" refuses_unsupported_machine

# the two README commands work on a machine with only git and Rust: set-up never calls make
# (a `make` that fails loudly is put first on PATH)
needs_no_make() {
    local shim
    shim="$(mktemp -d)"
    printf '#!/bin/sh\necho "make was called: $*" >&2\nexit 1\n' >"$shim/make"
    chmod +x "$shim/make"
    if ! PATH="$shim:$PATH" "$ROOT/scripts/setup.sh" >/dev/null; then
        rm -rf "$shim"; die "set-up needs make"
    fi
    rm -rf "$shim"
}
step "set-up needs no make" needs_no_make
step "cargo fmt --check" cargo fmt --all --check
step "cargo clippy -D warnings" cargo clippy --workspace --all-targets --quiet -- -D warnings
step "unit tests (core, flight server)" cargo test --quiet -p barecount-core -p barecount-flight

mkdir -p "$BC_STATE/pgrx"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"   # root or sudo, as the README says
$SUDO chown postgres:postgres "$BC_STATE/pgrx"
step "pgrx #[pg_test]s" env -C pg_extension CARGO_PGRX_TEST_RUNAS=postgres \
    CARGO_PGRX_TEST_PGDATA="$BC_STATE/pgrx/data" cargo pgrx test pg15

step "install extension into Postgres 15" install_extension
"$ROOT/scripts/e2e.sh"
# the demo end to end, so it cannot break silently
step "demo" "$ROOT/scripts/demo.sh"
# the README's pipeline walkthrough (schedule, backfill, history, a transient failure, SIGKILL)
step "pipeline walkthrough" "$ROOT/scripts/walkthrough.sh"
# a short SQLsmith round as the real roles (scripts/fuzz.sh 20000 for the full one)
step "SQLsmith fuzz (2,000 queries)" "$ROOT/scripts/fuzz.sh" 2000 1

say "all tests passed in $((SECONDS - T0))s"
