#!/usr/bin/env bash
# A PostgreSQL server on this machine for a search's relational storage (CI and trying it): as root.
#   scripts/local_postgres.sh start   # installs Debian's postgresql if missing, starts it, prints
#                                     # the URL: python -m project.search ... --storage URL
#   scripts/local_postgres.sh stop
# Database `project_search`, user `postgres` with password `postgres`, on localhost:5432 only.
set -euo pipefail

URL=postgresql://postgres:postgres@localhost:5432/project_search

install() {
    if command -v pg_ctlcluster >/dev/null && command -v psql >/dev/null; then
        return
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
}

cluster() {  # the first cluster Debian's tools know, created if there is none: "VERSION NAME"
    local found
    found=$(pg_lsclusters -h | awk 'NR == 1 {print $1, $2}')
    if [[ -z $found ]]; then
        pg_createcluster "$(ls /usr/lib/postgresql | sort -V | tail -1)" main >/dev/null
        found=$(pg_lsclusters -h | awk 'NR == 1 {print $1, $2}')
    fi
    echo "$found"
}

start() {
    install
    read -r version name <<<"$(cluster)"
    if ! pg_lsclusters -h | grep -q "^$version *$name .*online"; then
        pg_ctlcluster "$version" "$name" start
    fi
    for _ in $(seq 50); do  # up to 10 s for the server to take connections
        su postgres -c "psql -qAtc 'select 1'" >/dev/null 2>&1 && break
        sleep 0.2
    done
    su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
    if ! su postgres -c "psql -qAtc \"select 1 from pg_database where datname = 'project_search'\"" \
        | grep -q 1; then
        su postgres -c "createdb project_search"
    fi
    echo "local_postgres: running; storage URL $URL"
}

stop() {
    read -r version name <<<"$(cluster)"
    pg_ctlcluster "$version" "$name" stop || true
    echo "local_postgres: stopped"
}

case ${1:-} in
start) start ;;
stop) stop ;;
url) echo "$URL" ;;
*)
    echo "usage: $0 start|stop|url" >&2
    exit 2
    ;;
esac
