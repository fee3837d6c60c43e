#!/usr/bin/env bash
# A live one-node SLURM cluster on this machine, for the launcher's tests and for trying the
# launcher without a real cluster.  Needs root on Debian/Ubuntu (installs slurm-wlm and munge).
#
#   bash scripts/slurm_cluster.sh start    # install if needed, configure, start, wait until the node is idle
#   bash scripts/slurm_cluster.sh status   # daemons and sinfo
#   bash scripts/slurm_cluster.sh stop     # cancel every job, stop the daemons this script started
#
# Idempotent: `start` on a running cluster only checks it (well under a second); `stop` on a
# stopped one does nothing.  The cluster is one node named $(hostname), every CPU and ~90% of the
# memory of this machine, one partition (default `debug`, Default=YES, no time limit), no
# accounting (no slurmdbd: `sacct` does not work, `squeue`/`scontrol show job` do).
#
# Environment:
#   SLURM_CLUSTER_PARTITION   partition name (default debug)
#   SLURM_CLUSTER_CPUS        CPUs the node offers (default $(nproc))
#   SLURM_CLUSTER_TIMEOUT     seconds to wait for the node to become idle (default 90)
#   SLURM_CLUSTER_FORCE=1     overwrite an /etc/slurm/slurm.conf this script did not write
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARK="# maskalign one-node test cluster (scripts/slurm_cluster.sh)"
STATE=/var/spool/slurm-maskalign
RUN=/run/slurm-maskalign
LOG=/var/log/slurm-maskalign
PARTITION=${SLURM_CLUSTER_PARTITION:-debug}
TIMEOUT=${SLURM_CLUSTER_TIMEOUT:-90}
HOST=$(hostname -s)

say() { echo "[slurm_cluster] $*"; }
die() { echo "[slurm_cluster] error: $*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons)"; }

# The pid in FILE if that process is alive and runs COMMAND (guards against reused pids).
live_pid() {
  local file=$1 command=$2 pid
  [ -s "$file" ] || return 1
  pid=$(tr -dc 0-9 <"$file")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
  [ "$(cat "/proc/$pid/comm")" = "$command" ] || return 1
  echo "$pid"
}

node_state() { sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n1 | tr -d '*~#%$@^-'; }

cluster_ready() {
  command -v sinfo >/dev/null 2>&1 || return 1
  live_pid "$RUN/slurmctld.pid" slurmctld >/dev/null || return 1
  live_pid "$RUN/slurmd.pid" slurmd >/dev/null || return 1
  case "$(node_state)" in idle|mixed|allocated|completing) return 0 ;; *) return 1 ;; esac
}

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
     && command -v sbatch >/dev/null; then
    return
  fi
  command -v apt-get >/dev/null || die "slurm-wlm/munge are missing and there is no apt-get to install them"
  say "installing slurm-wlm and munge (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

# Writes $CONF; returns 1 when it was already up to date.
write_config() {
  if [ -f "$CONF" ] && ! head -n1 "$CONF" | grep -qF "$MARK" && [ "${SLURM_CLUSTER_FORCE:-0}" != 1 ]; then
    die "$CONF exists and was not written by this script (a real cluster?); set SLURM_CLUSTER_FORCE=1 to replace it"
  fi
  local cpus mem
  cpus=${SLURM_CLUSTER_CPUS:-$(nproc)}
  mem=$(free -m | awk '/^Mem:/ {print int($2 * 0.9)}')
  mkdir -p "$CONF_DIR"
  local tmp
  tmp=$(mktemp "$CONF_DIR/.slurm.conf.XXXXXX")
  cat >"$tmp" <<EOF
$MARK
ClusterName=maskalign
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# Credentials expire after 10 s instead of 120: a requeued job waits that long before it may start again.
AuthInfo=cred_expire=10
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=2,sched_interval=2,sched_min_interval=0
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=3600
InactiveLimit=0
SlurmctldTimeout=60
SlurmdTimeout=300
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
  if [ -f "$CONF" ] && cmp -s "$tmp" "$CONF"; then
    rm -f "$tmp"
    return 1
  fi
  mv "$tmp" "$CONF"
  chmod 644 "$CONF"
}

start_munge() {
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  chmod 755 /run/munge
  if [ ! -s /etc/munge/munge.key ]; then
    say "creating /etc/munge/munge.key"
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
  fi
  if ! live_pid /run/munge/munged.pid munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
  fi
  local i
  for i in $(seq 1 50); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return
    sleep 0.1
  done
  die "munged does not answer (see /var/log/munge/munged.log)"
}

start_daemons() {
  mkdir -p "$STATE/ctld" "$STATE/d" "$RUN" "$LOG"
  if ! live_pid "$RUN/slurmctld.pid" slurmctld >/dev/null; then
    slurmctld || die "slurmctld did not start (see $LOG/slurmctld.log)"
  fi
  if ! live_pid "$RUN/slurmd.pid" slurmd >/dev/null; then
    slurmd -N "$HOST" || die "slurmd did not start (see $LOG/slurmd.log)"
  fi
}

wait_idle() {
  local t0=$SECONDS state=""
  while [ $((SECONDS - t0)) -lt "$TIMEOUT" ]; do
    state=$(node_state || true)
    case "$state" in
      idle|mixed|allocated|completing) return 0 ;;
      down|drained|draining|drain)
        scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  die "node $HOST is not idle after ${TIMEOUT}s (state: ${state:-none}); see $LOG/slurmctld.log and $LOG/slurmd.log"
}

cmd_start() {
  if cluster_ready; then
    if [ "$(id -u)" = 0 ] && write_config; then
      scontrol reconfigure >/dev/null
      wait_idle
      say "configuration updated ($CONF)"
    fi
    say "already running: node $HOST $(node_state), partition $PARTITION"
    return
  fi
  need_root
  local t0=$SECONDS
  install_packages
  write_config || true
  start_munge
  start_daemons
  wait_idle
  say "up in $((SECONDS - t0))s: node $HOST $(node_state), partition $(sinfo -h -o %R | paste -sd, -)"
}

cmd_stop() {
  local ctld slurmd munged pid
  if command -v squeue >/dev/null && live_pid "$RUN/slurmctld.pid" slurmctld >/dev/null; then
    # Cancel every job first, so that none is recovered (and re-run) by the next start.
    local jobs
    jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
      say "cancelling jobs: $jobs"
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      local i
      for i in $(seq 1 40); do
        [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break
        sleep 0.5
      done
    fi
  fi
  slurmd=$(live_pid "$RUN/slurmd.pid" slurmd || true)
  ctld=$(live_pid "$RUN/slurmctld.pid" slurmctld || true)
  munged=$(live_pid /run/munge/munged.pid munged || true)
  for pid in $slurmd $ctld $munged; do kill "$pid" 2>/dev/null || true; done
  for pid in $slurmd $ctld $munged; do
    local i
    for i in $(seq 1 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    [ -d "/proc/$pid" ] && kill -9 "$pid" 2>/dev/null || true
  done
  if [ -n "$slurmd$ctld$munged" ]; then say "stopped"; else say "not running"; fi
}

cmd_status() {
  local name file
  for name in slurmctld slurmd munged; do
    case $name in munged) file=/run/munge/munged.pid ;; *) file=$RUN/$name.pid ;; esac
    if pid=$(live_pid "$file" "$name"); then say "$name: running (pid $pid)"; else say "$name: not running"; fi
  done
  if cluster_ready; then
    sinfo
    squeue
  else
    say "cluster not ready"
    return 1
  fi
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
