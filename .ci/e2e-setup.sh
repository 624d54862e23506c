#!/usr/bin/env bash
# What the browser tests (tests/ui, marker `e2e`) need on a fresh Debian machine, idempotently:
# Debian's Chromium at /usr/bin/chromium. The Python side (the `playwright` package) comes with
# the project's dev extra (`make install`); Playwright never downloads a browser of its own here
# (`playwright install` is not run: the tests start /usr/bin/chromium).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

if [ -x /usr/bin/chromium ]; then
    echo "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo present)"
else
    echo "installing Debian's chromium"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq chromium >/dev/null
    /usr/bin/chromium --version
fi

if [ -x .venv/bin/python ]; then
    if .venv/bin/python -c 'import playwright.async_api' 2>/dev/null; then
        echo "playwright: $(.venv/bin/python -c 'from importlib.metadata import version; print(version("playwright"))')"
    else
        echo "note: the playwright package is not in .venv yet; 'make install' (the dev extra) adds it" >&2
    fi
fi
