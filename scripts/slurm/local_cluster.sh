#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for CI and for trying the sbatch files: run as root.
#   scripts/slurm/local_cluster.sh start   # installs Slurm + munge if missing, starts the daemons
#   scripts/slurm/local_cluster.sh stop    # stops them by the PIDs in their pid files
# Partition `debug`, one node `localhost` with this machine's cores. Debian/Ubuntu only (apt-get).
#
#   scripts/slurm/local_cluster.sh start 2 # a second cluster beside it, of 2 nodes (stop 2)
# Partition `nodes`: node1 and node2, half the cores each, one slurmd per node on its own port
# (Debian's Slurm 22.05 is built with multiple-slurmd support), with its own config, ports
# (6827, 6828, 6831-) and folder, so both clusters run at once. Its commands need
# SLURM_CONF=/var/tmp/project-slurm-2nodes/slurm.conf, and DDP jobs MASTER_ADDR=127.0.0.1:
# Lightning takes the first node's name, node1, for the address, and no DNS knows it.
set -euo pipefail

NODES=${2:-1}
if [[ $NODES == 1 ]]; then
    DIR=${SLURM_LOCAL_DIR:-/var/tmp/project-slurm}   # state, spool, logs and pid files
    CONF=/etc/slurm/slurm.conf                        # where sbatch/srun/squeue look without SLURM_CONF
else
    DIR=${SLURM_LOCAL_DIR:-/var/tmp/project-slurm-${NODES}nodes}
    CONF=$DIR/slurm.conf
    export SLURM_CONF=$CONF   # for scontrol and sinfo below
fi
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

node_names() {
    if [[ $NODES == 1 ]]; then echo localhost; else seq -f "node%g" "$NODES"; fi
}

slurmd_file() {  # slurmd_file NODE EXTENSION: the pid or log file of that node's slurmd
    if [[ $NODES == 1 ]]; then echo "$DIR/slurmd.$2"; else echo "$DIR/slurmd-$1.$2"; fi
}

write_config() {
    if [[ -f $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
        echo "local_cluster: $CONF exists and was not written by this script; not touching it" >&2
        exit 1
    fi
    mkdir -p "$DIR/state" "$DIR/spool" "$(dirname "$CONF")"
    local memory=$(($(free -m | awk '/^Mem:/ {print $2}') * 8 / 10 / NODES))
    local cpus=$(($(nproc) / NODES))
    local name=ci spool=$DIR/spool ports=""
    if [[ $NODES != 1 ]]; then  # %n: the node's name
        name=ci${NODES}nodes spool=$DIR/spool/%n ports=$'SlurmctldPort=6827\nSlurmdPort=6828'
    fi
    # EnforcePartLimits=ALL: a job asking for more CPUs than exist is refused instead of pending
    # forever; KillWait=5: a requeued or cancelled job's leftovers get SIGKILL after 5 s, not 30
    cat >"$CONF" <<EOF
$MARK
ClusterName=$name
SlurmctldHost=localhost
$ports
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
SlurmdSpoolDir=$spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$(slurmd_file %n pid)
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$(slurmd_file %n log)
EOF
    if [[ $NODES == 1 ]]; then
        echo "NodeName=localhost NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 CPUs=$cpus" \
            "RealMemory=$memory State=UNKNOWN" >>"$CONF"
        echo "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP" >>"$CONF"
        return
    fi
    for i in $(seq "$NODES"); do
        echo "NodeName=node$i NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 Port=$((6830 + i))" \
            "CPUs=$cpus RealMemory=$memory State=UNKNOWN" >>"$CONF"
    done
    echo "PartitionName=nodes Nodes=node[1-$NODES] Default=YES MaxTime=INFINITE State=UP" >>"$CONF"
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

running() {  # running PID_FILE: the pid file names a live process
    [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

start() {
    if [[ $(id -u) != 0 ]]; then
        echo "local_cluster: run as root (it installs packages and starts daemons)" >&2
        exit 1
    fi
    if (($(nproc) < NODES)); then
        echo "local_cluster: $NODES nodes need at least $NODES cores, this machine has $(nproc)" >&2
        exit 1
    fi
    install
    write_config
    mkdir -p "$DIR"
    start_munge
    running "$DIR/slurmctld.pid" || slurmctld -i
    wait_for 20 "slurmctld answering" scontrol ping
    for node in $(node_names); do
        running "$(slurmd_file "$node" pid)" || slurmd -N "$node"
    done
    # ReturnToService=2 brings a node back once it registers; idle means jobs can start
    wait_for 30 "every node idle" bash -c '[[ $(sinfo -h -N -o %T | sort -u) == idle ]]'
    if [[ $NODES == 1 ]]; then
        echo "local_cluster: running (partition debug, $(nproc) CPUs); stop with: $0 stop"
    else
        echo "local_cluster: $NODES nodes running (partition nodes); for their jobs:" \
            "export SLURM_CONF=$CONF MASTER_ADDR=127.0.0.1; stop with: $0 stop $NODES"
    fi
}

stop() {
    for file in $(for node in $(node_names); do slurmd_file "$node" pid; done) "$DIR/slurmctld.pid"; do
        if running "$file"; then
            pid=$(cat "$file")
            kill "$pid"
            wait_for 10 "$(basename "$file" .pid) (pid $pid) exiting" bash -c "! kill -0 $pid"
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
    echo "usage: $0 start|stop [NODES (default 1; 2 starts a second, 2-node cluster)]" >&2
    exit 2
    ;;
esac
