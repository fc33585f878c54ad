#!/bin/sh
# Install the system packages strongroom's tests need, when they are missing (Debian/Ubuntu, as root).
#
#   scripts/ensure-system-deps.sh postgresql     # initdb and pg_ctl, for the PostgreSQL catalog tests
#   scripts/ensure-system-deps.sh xfsprogs       # mkfs.xfs, for the reflink tests (a loop-mounted XFS image)
#
# Prints where the PostgreSQL binaries are on its last line ("bindir=/usr/lib/postgresql/15/bin"), or
# where mkfs.xfs is ("mkfs=/usr/sbin/mkfs.xfs").
# Exits 1 with one line on stderr when they cannot be installed (not root, no apt-get, no network).
set -eu

find_pg_bindir() {
    found=""
    # Debian's versioned folders first (the newest wins), then whatever initdb is on PATH
    for d in /usr/lib/postgresql/*/bin /usr/local/pgsql/bin $(command -v initdb 2>/dev/null | xargs -r dirname); do
        if [ -z "$found" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
            found="$d"
        fi
        case "$d" in /usr/lib/postgresql/*) [ -x "$d/initdb" ] && found="$d" ;; esac
    done
    [ -n "$found" ] && echo "$found"
}

# apt_install PACKAGE TOOL: install a Debian package as root, or say in one line why it cannot be done.
apt_install() {
    if [ "$(id -u)" != 0 ]; then
        echo "ensure-system-deps: $2 not found and not root: install $1 (apt-get install $1)" >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "ensure-system-deps: $2 not found and no apt-get: install $1 by hand" >&2
        exit 1
    fi
    echo "ensure-system-deps: installing $1 with apt-get ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq "$1"; } >&2; then
        echo "ensure-system-deps: apt-get install $1 failed" >&2
        exit 1
    fi
}

case "${1:-}" in
postgresql)
    if dir=$(find_pg_bindir); then
        echo "bindir=$dir"
        exit 0
    fi
    apt_install postgresql initdb
    if dir=$(find_pg_bindir); then
        echo "bindir=$dir"
        exit 0
    fi
    echo "ensure-system-deps: postgresql installed but initdb not found" >&2
    exit 1
    ;;
xfsprogs)
    PATH="$PATH:/usr/sbin:/sbin"
    if mkfs=$(command -v mkfs.xfs); then
        echo "mkfs=$mkfs"
        exit 0
    fi
    apt_install xfsprogs mkfs.xfs
    if mkfs=$(command -v mkfs.xfs); then
        echo "mkfs=$mkfs"
        exit 0
    fi
    echo "ensure-system-deps: xfsprogs installed but mkfs.xfs not found" >&2
    exit 1
    ;;
*)
    echo "usage: $0 postgresql|xfsprogs" >&2
    exit 2
    ;;
esac
