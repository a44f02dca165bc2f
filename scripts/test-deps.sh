#!/usr/bin/env bash
# Installs the real servers the test suite talks to, where they are missing and we can.
# PostgreSQL is expected on 127.0.0.1:5432 (trust auth); Dovecot comes from Debian.
set -euo pipefail

missing=()
command -v dovecot >/dev/null 2>&1 && command -v doveadm >/dev/null 2>&1 || missing+=(dovecot-imapd)
# The review desk's browser tests drive Debian's chromium through Playwright (the dev extra
# pins playwright 1.64, which pairs with Chromium 156); never `playwright install`.
[ -x /usr/bin/chromium ] || missing+=(chromium libatomic1 fonts-dejavu-core)

if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing ${missing[*]} for the tests"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "the tests need: ${missing[*]}" >&2
        echo "install them with: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
    cluster=$(ls /etc/postgresql 2>/dev/null | head -n1 || true)
    if [ -n "$cluster" ] && command -v pg_ctlcluster >/dev/null 2>&1; then
        echo "starting PostgreSQL $cluster for the tests"
        pg_ctlcluster --skip-systemctl-redirect "$cluster" main start || true
    fi
    if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
        echo "PostgreSQL is not reachable on 127.0.0.1:5432; the database tests need it" >&2
        echo "(set MAILBOT_TEST_PG_URL to use another server)" >&2
        exit 1
    fi
fi
