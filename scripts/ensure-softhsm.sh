#!/usr/bin/env bash
# Installs SoftHSM2 (Debian's softhsm2) when it is missing: the PKCS#11 tests run against it.
# Run by `make test`; needs root (or sudo) only when the package is not there yet.
set -euo pipefail
for module in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so; do
    if [ -e "$module" ] && command -v softhsm2-util >/dev/null 2>&1; then exit 0; fi
done
if ! command -v apt-get >/dev/null 2>&1; then
    echo "softhsm2 is missing and this system has no apt-get: install SoftHSM2 2.6 by hand" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
        echo "softhsm2 is missing: run 'apt-get install softhsm2' as root (PKCS#11 tests skip outside CI)" >&2
        exit 1
    fi
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq softhsm2 >/dev/null
echo "installed softhsm2"
