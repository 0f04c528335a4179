#!/usr/bin/env bash
# A one-node SLURM on this machine (Debian/Ubuntu, as root): enough to run `-m hydra/launcher=slurm` sweeps
# and `pytest -m slurm` without a cluster. Idempotent: rerunning keeps running daemons and a matching config.
#
#   sudo scripts/local_slurm.sh        # then: sinfo; srun hostname
#
# What it does: installs Debian's slurm-wlm and munge, writes /etc/slurm/slurm.conf for this host (loopback
# address, CPUs from nproc, memory from free), creates a munge key if there is none, and starts munged,
# slurmctld and slurmd as plain background daemons (no systemd: containers and CI runners have none).
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "local_slurm.sh: run as root (it installs packages and starts daemons)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    echo "local_slurm.sh: installing slurm-wlm and munge"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

host=$(hostname -s)
cpus=$(nproc)
mem_total_mb=$(free -m | awk '/^Mem:/ {print $2}')
# Leave the OS some headroom; slurmd rejects a node that claims more memory than it has.
mem_mb=$((mem_total_mb * 9 / 10))
mem_per_cpu=$((mem_mb / cpus))

mkdir -p /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm /run/slurm
conf=/etc/slurm/slurm.conf
new_conf=$(mktemp)
cat >"$new_conf" <<EOF
# Written by rtc_sweep scripts/local_slurm.sh: a one-node cluster on loopback.
ClusterName=local
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
# No cgroups: containers rarely delegate them, and one trusted user needs no isolation.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# Without a default, a job asking for no memory would take the whole node and jobs could not run side by side.
DefMemPerCPU=${mem_per_cpu}
ReturnToService=2
# Trust the counts below over what slurmd detects (virtual machines report odd topologies).
SlurmdParameters=config_overrides
SlurmctldPort=6817
SlurmdPort=6818
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
conf_changed=0
if ! cmp -s "$new_conf" "$conf"; then
    mv "$new_conf" "$conf"
    chmod 644 "$conf"
    conf_changed=1
else
    rm -f "$new_conf"
fi

# munge: the key is created once; munged needs its run directory owned by the munge user.
if [[ ! -s /etc/munge/munge.key ]]; then
    if command -v mungekey >/dev/null; then
        mungekey --create --force
    else
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 755 /run/munge

running() {  # running <pidfile>: the daemon that wrote it is alive
    [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

if ! running /run/munge/munged.pid; then
    echo "local_slurm.sh: starting munged"
    runuser -u munge -- /usr/sbin/munged
fi
for _ in $(seq 50); do
    munge -n </dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.2
done
munge -n </dev/null | unmunge >/dev/null || { echo "local_slurm.sh: munge does not work" >&2; exit 1; }

# A changed config needs both daemons restarted; kill only the ones whose pid files we own.
if [[ $conf_changed -eq 1 ]]; then
    for pidfile in /run/slurm/slurmd.pid /run/slurm/slurmctld.pid; do
        if running "$pidfile"; then
            kill "$(cat "$pidfile")"
            for _ in $(seq 50); do running "$pidfile" || break; sleep 0.2; done
        fi
    done
fi
if ! running /run/slurm/slurmctld.pid; then
    echo "local_slurm.sh: starting slurmctld"
    # -c: ignore saved state from an earlier config (a changed node line would otherwise conflict).
    slurmctld -c
fi
if ! running /run/slurm/slurmd.pid; then
    echo "local_slurm.sh: starting slurmd"
    slurmd -N "$host"
fi

# Wait until the node takes jobs; a node left down or drained by an earlier run is resumed.
for _ in $(seq 60); do
    state=$(sinfo -h -n "$host" -o %T 2>/dev/null | head -1 || true)
    case "$state" in
        idle* | mixed* | allocated* | completing*) break ;;
        down* | drain* | drained* | fail*) scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
done
state=$(sinfo -h -n "$host" -o %T 2>/dev/null | head -1 || true)
case "$state" in
    idle* | mixed* | allocated* | completing*) ;;
    *)
        echo "local_slurm.sh: node $host is '${state:-unknown}'; see /var/log/slurm/slurmd.log and slurmctld.log" >&2
        exit 1
        ;;
esac

echo "local_slurm.sh: SLURM is up: node $host, $cpus CPUs, ${mem_mb} MB, partition 'debug'."
echo "  check:  sinfo        (the node should be idle)"
echo "  try:    srun -N1 hostname"
echo "  tests:  pytest -m slurm"
