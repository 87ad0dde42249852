#!/usr/bin/env bash
# A one-node SLURM cluster on this machine for tests/test_slurm.py: munge, a private MariaDB, slurmdbd
# (the executor plugin polls sacct), slurmctld and slurmd, all on loopback. Needs root and Debian's
# packages (bookworm: SLURM 22.05). Idempotent: a running cluster is left as it is. Undo: stop.sh.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "start.sh: must run as root (it installs packages and starts daemons)" >&2
    exit 1
fi

CLUSTER=goodtransfer
PARTITION=debug
RUN=/run/goodtransfer-slurm          # pid files, the MariaDB socket, the list of daemons we started
STATE=/var/lib/goodtransfer-slurm    # MariaDB's private datadir, slurmctld's state
LOGS=/var/log/goodtransfer-slurm
DB_PORT=3307                         # not 3306: a system MariaDB may already listen there
DB_PASS=goodtransfer-test-only
MARK="# written by goodtransfer tests/slurm/start.sh"

say() { echo "[slurm start] $*"; }

started() { echo "$1" >> "$RUN/started"; say "started $1"; }

alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2> /dev/null; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND until it succeeds
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq "$((seconds * 4))"); do
        if "$@" > /dev/null 2>&1; then return 0; fi
        sleep 0.25
    done
    echo "start.sh: $what did not come up within ${seconds}s; see $LOGS/" >&2
    exit 1
}

node_up() { [[ $(sinfo -h -N -o %t 2> /dev/null | head -1) =~ ^(idle|mix|alloc) ]]; }

if command -v sinfo > /dev/null && node_up; then
    say "a cluster is already up: $(sinfo -h -o '%P %D %t')"
    exit 0
fi

packages=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f '${Status}' "$package" 2> /dev/null | grep -q "ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq > /dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi

mkdir -p "$RUN" "$STATE" "$LOGS" /etc/slurm /var/spool/slurmd

if [[ -e /etc/slurm/slurm.conf ]] && ! grep -qF "$MARK" /etc/slurm/slurm.conf; then
    echo "start.sh: /etc/slurm/slurm.conf exists and is not ours; not overwriting it" >&2
    exit 1
fi

host=$(hostname -s)
# The hardware as slurmd sees it (CPUs, sockets, cores, threads), with a bit of memory left to the OS.
hardware=$(slurmd -C | head -1 | sed -E 's/^NodeName=[^ ]+ //; s/ RealMemory=[0-9]+//; s/ UpTime=.*//')
total_mb=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024))
real_mb=$((total_mb * 9 / 10))

cat > /etc/slurm/slurm.conf << EOF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default a job that asks for no memory is given the whole node.
DefMemPerCPU=1000
KillWait=5
InactiveLimit=0
MinJobAge=300
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
# The plugin puts the rule and wildcards in the job comment; keep it for sacct.
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 $hardware RealMemory=$real_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

cat > /etc/slurm/cgroup.conf << EOF
$MARK
# proctrack/linuxproc and task/affinity use no cgroups; nothing is constrained.
ConstrainCores=no
ConstrainRAMSpace=no
EOF

install -m 600 /dev/null /etc/slurm/slurmdbd.conf
cat > /etc/slurm/slurmdbd.conf << EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
PidFile=$RUN/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
EOF
mkdir -p "$STATE/slurmctld"
say "wrote /etc/slurm/{slurm,slurmdbd,cgroup}.conf: node $host ($hardware RealMemory=$real_mb), partition $PARTITION"

# munge: one key shared by every daemon and client; munged runs as user munge.
if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey --create --keyfile /etc/munge/munge.key
    say "created /etc/munge/munge.key"
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! alive /run/munge/munged.pid; then
    runuser -u munge -- /usr/sbin/munged
    started munge
fi
wait_for 10 munge bash -c "munge -n | unmunge"

# MariaDB in a private datadir, on loopback only.
db=(mariadb --protocol=socket --socket="$RUN/mysql/mysqld.sock")
if [[ ! -d $STATE/mysql/mysql ]]; then
    mkdir -p "$STATE/mysql"
    chown mysql:mysql "$STATE/mysql"
    mariadb-install-db --user=mysql --datadir="$STATE/mysql" --auth-root-authentication-method=socket \
        > "$LOGS/mariadb-install.log" 2>&1
    say "initialised MariaDB datadir $STATE/mysql"
fi
mkdir -p "$RUN/mysql"
chown mysql:mysql "$RUN/mysql"
if ! alive "$RUN/mysql/mysqld.pid"; then
    (mariadbd --user=mysql --datadir="$STATE/mysql" --socket="$RUN/mysql/mysqld.sock" --pid-file="$RUN/mysql/mysqld.pid" \
        --bind-address=127.0.0.1 --port=$DB_PORT --log-error="$LOGS/mariadb.log" > /dev/null 2>&1 &)
    started mariadb
fi
wait_for 30 MariaDB "${db[@]}" -e "SELECT 1"
"${db[@]}" -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

if ! alive "$RUN/slurmdbd.pid"; then
    slurmdbd
    started slurmdbd
fi
wait_for 30 slurmdbd sacctmgr -n show cluster
if [[ -z $(sacctmgr -n -P show cluster "$CLUSTER" format=cluster) ]]; then
    sacctmgr -i add cluster "$CLUSTER" > /dev/null
    say "registered cluster $CLUSTER in accounting"
fi

if ! alive "$RUN/slurmctld.pid"; then
    slurmctld
    started slurmctld
fi
if ! alive "$RUN/slurmd.pid"; then
    slurmd
    started slurmd
fi
wait_for 60 "node $host" node_up
say "up: $(sinfo -h -o 'partition %P, %D node(s), %t, %c CPUs, %m MB') ; sacct works: $(sacct -n -X | wc -l) job(s) on record"
