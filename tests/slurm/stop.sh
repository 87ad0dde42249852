#!/usr/bin/env bash
# Stop the daemons tests/slurm/start.sh started (newest first), by their pid files. Installed packages,
# configuration and the accounting database stay, so the next start.sh takes seconds.
set -euo pipefail

RUN=/run/goodtransfer-slurm

say() { echo "[slurm stop] $*"; }

pid_file() {
    case $1 in
        munge) echo /run/munge/munged.pid ;;
        mariadb) echo "$RUN/mysql/mysqld.pid" ;;
        *) echo "$RUN/$1.pid" ;;
    esac
}

if [[ ! -s $RUN/started ]]; then
    say "nothing to stop (start.sh started no daemons)"
    exit 0
fi

for daemon in $(tac "$RUN/started"); do
    file=$(pid_file "$daemon")
    if [[ -s $file ]] && kill -0 "$(cat "$file")" 2> /dev/null; then
        pid=$(cat "$file")
        kill -TERM "$pid"
        for _ in $(seq 80); do
            kill -0 "$pid" 2> /dev/null || break
            sleep 0.25
        done
        if kill -0 "$pid" 2> /dev/null; then
            kill -KILL "$pid"
            say "killed $daemon (pid $pid) after 20 s"
        else
            say "stopped $daemon (pid $pid)"
        fi
    fi
done
rm -f "$RUN/started"
