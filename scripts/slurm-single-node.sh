#!/usr/bin/env bash
# A single-node Slurm on this machine, for the tests and for trying `gan-search slurm` without a cluster:
# munged, slurmctld and slurmd (root; Debian's slurm-wlm and munge). Idempotent: a running cluster is left alone.
#   scripts/slurm-single-node.sh            start (installs slurm-wlm and munge with apt if missing)
#   scripts/slurm-single-node.sh --stop     stop the daemons
# The node has this machine's CPUs, jobs may share them (OverSubscribe=FORCE), and tasks are plain processes
# (proctrack/linuxproc, task/none): nothing here needs cgroups or systemd.
set -euo pipefail
SUDO=$([ "$(id -u)" = 0 ] || echo "sudo -n")
if [ "${1:-}" = "--stop" ]; then
  $SUDO pkill -x slurmd || true; $SUDO pkill -x slurmctld || true; $SUDO pkill -x munged || true
  exit 0
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  $SUDO apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q slurm-wlm munge >/dev/null 2>&1; } \
    || { echo "slurm-wlm could not be installed" >&2; exit 1; }
fi
if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
  exit 0  # already up
fi
host=$(hostname -s)
cpus=$(nproc --all)  # the machine's, whatever this shell's affinity
mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
$SUDO mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/lib/munge /var/log/munge
[ -s /etc/munge/munge.key ] || $SUDO sh -c 'dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null'
$SUDO chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
$SUDO chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || $SUDO -u munge /usr/sbin/munged 2>/dev/null || $SUDO su -s /bin/sh munge -c /usr/sbin/munged \
  || $SUDO /usr/sbin/munged --force
$SUDO tee /etc/slurm/slurm.conf >/dev/null <<CONF
ClusterName=gansearch
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
ReturnToService=2
MpiDefault=none
JobRequeue=1
KillWait=30
SchedulerParameters=sched_interval=1,defer
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:64
CONF
pgrep -x slurmctld >/dev/null || $SUDO /usr/sbin/slurmctld
pgrep -x slurmd >/dev/null || $SUDO /usr/sbin/slurmd
for _ in $(seq 60); do
  if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then exit 0; fi
  sleep 1
done
echo "slurm did not come up: see /var/log/slurm/slurmctld.log and slurmd.log" >&2
exit 1
