#!/usr/bin/env bash
# Debian's chromium at /usr/bin/chromium, for the browser tests (tests/test_page.py; no network at test time).
# `make test` runs this before the suite, so those tests run wherever CI runs them instead of skipping.
# Idempotent: does nothing when chromium is there. Otherwise installs it with apt-get, as root or through sudo,
# or stops with a message saying what to do.
#
#   bash scripts/ensure-chromium.sh [--dry-run]     --dry-run: print the commands, change nothing
#
# KT_CHROMIUM overrides the path checked (tests of this script only: the browser tests use /usr/bin/chromium).
set -euo pipefail

CHROMIUM="${KT_CHROMIUM:-/usr/bin/chromium}"
DRY_RUN=false
if [ "${1:-}" = "--dry-run" ]; then
    DRY_RUN=true
fi

fail() {
    echo "ensure-chromium: $1." >&2
    echo "ensure-chromium: the browser tests (tests/test_page.py) need $CHROMIUM: install Debian's chromium" >&2
    echo "ensure-chromium: package (sudo apt-get install chromium) or put a chromium binary there, then run make test again." >&2
    exit 1
}

run() {
    echo "+ $*"
    if [ "$DRY_RUN" = false ]; then
        "$@"
    fi
}

if [ -x "$CHROMIUM" ]; then
    exit 0
fi
command -v apt-get >/dev/null || fail "$CHROMIUM is missing and this machine has no apt-get"
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || fail "$CHROMIUM is missing, and installing it needs root or sudo"
    SUDO=(sudo)
fi
echo "ensure-chromium: $CHROMIUM is missing: installing Debian's chromium with apt-get"
run "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q || fail "apt-get update failed"
run "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium || fail "apt-get install chromium failed"
if [ "$DRY_RUN" = true ]; then
    exit 0
fi
[ -x "$CHROMIUM" ] || fail "apt-get installed chromium, but $CHROMIUM is still missing"
"$CHROMIUM" --version
