#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for CI and for trying the sbatch files: run as root.
#   scripts/slurm/local_cluster.sh start   # installs Slurm + munge if missing, starts the daemons
#   scripts/slurm/local_cluster.sh stop    # stops them by the PIDs in their pid files
# Partition `debug`, one node `localhost` with this machine's cores. Debian/Ubuntu only (apt-get).
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/var/tmp/project-slurm}   # state, spool, logs and pid files
CONF=/etc/slurm/slurm.conf                        # where sbatch/srun/squeue look without SLURM_CONF
MARK="# written by scripts/slurm/local_cluster.sh"

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2 s
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq $((seconds * 5))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    echo "local_cluster: $what did not happen within ${seconds}s (logs in $DIR)" >&2
    return 1
}

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        return
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

write_config() {
    if [[ -f $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
        echo "local_cluster: $CONF exists and was not written by this script; not touching it" >&2
        exit 1
    fi
    mkdir -p "$DIR/state" "$DIR/spool" "$(dirname "$CONF")"
    # EnforcePartLimits=ALL: a job asking for more CPUs than exist is refused instead of pending
    # forever; KillWait=5: a requeued or cancelled job's leftovers get SIGKILL after 5 s, not 30
    cat >"$CONF" <<EOF
$MARK
ClusterName=ci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
EnforcePartLimits=ALL
KillWait=5
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
NodeName=localhost NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$(($(free -m | awk '/^Mem:/ {print $2}') * 8 / 10)) State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        mungekey --create
    fi
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- munged
    touch "$DIR/munged.ours"   # so that `stop` ends only a munged that this script started
    wait_for 10 "munged answering" bash -c "munge -n | unmunge"
}

running() {  # running NAME: the daemon's pid file names a live process
    [[ -s $DIR/$1.pid ]] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null
}

start() {
    if [[ $(id -u) != 0 ]]; then
        echo "local_cluster: run as root (it installs packages and starts daemons)" >&2
        exit 1
    fi
    install
    write_config
    mkdir -p "$DIR"
    start_munge
    running slurmctld || slurmctld -i
    wait_for 20 "slurmctld answering" scontrol ping
    running slurmd || slurmd -N localhost
    # ReturnToService=2 brings a node back once it registers; idle means jobs can start
    wait_for 30 "node localhost idle" bash -c '[[ $(sinfo -h -N -o %T) == idle* ]]'
    echo "local_cluster: running (partition debug, $(nproc) CPUs); stop with: $0 stop"
}

stop() {
    for daemon in slurmd slurmctld; do
        if running "$daemon"; then
            pid=$(cat "$DIR/$daemon.pid")
            kill "$pid"
            wait_for 10 "$daemon (pid $pid) exiting" bash -c "! kill -0 $pid"
        fi
    done
    if [[ -f $DIR/munged.ours && -s /run/munge/munged.pid ]]; then
        kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
        rm -f "$DIR/munged.ours"
    fi
    echo "local_cluster: stopped"
}

case ${1:-} in
start) start ;;
stop) stop ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
