#!/usr/bin/env bash
# Proves examples/slurm/alexnet.sbatch on a real SLURM: installs SLURM (Debian's packages:
# slurmctld, slurmd, munge, slurmdbd with MariaDB for sacct), starts a one-node cluster on this
# machine, runs the shipped script unchanged except in size (sbatch options: no GPUs, 2 CPUs;
# a prep of 4 imagenette-subset classes, 20 steps an epoch, 4 epochs, no periodic checkpoints)
# in both forms, and stops it each way:
#
#   signal   the time-limit signal: USR1 to the batch script, as --signal=B:USR1@300 sends it
#   requeue  preemption: scontrol requeue (SIGTERM to every process of the job, then requeue)
#   time     a real time limit: --time=2 --signal=B:USR1@55
#   scancel  scancel, then the same script submitted again with the same RUN_DIR
#
# for `torchrun` (2 gloo processes, NPROC_PER_NODE=2, --gpus 0) and `single` (one process,
# NPROC_PER_NODE=0, --devices cpu,cpu: the CPU stand-in for --gpus 2). Each form first runs
# uninterrupted for the reference weights. benchmarks/slurm_verify.py judges each case from the
# log, sacct and the run folder and prints one line; the script exits 1 if any case failed.
#
#   sudo bash benchmarks/slurm_check.sh [torchrun:signal single:time ...]   # default: all cases
#
# Root only, on a machine you can install packages on: not part of the test suite. Environment:
# PYTHON (default python3: one with torch; this checkout is put first on PYTHONPATH), SRC (an
# ImageNet-layout folder, default ../shared/data/imagenette-subset; generated shapes if absent),
# CRED_EXPIRE (seconds, default 10: SLURM holds a requeued job that long, 120 by default),
# KEEP=1 (keep the work folder). Ports 16817-16819 and 13306 must be free. Every daemon started
# here is stopped by its PID on exit, whatever happens.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
python=${PYTHON:-python3}
src=${SRC:-$repo/../shared/data/imagenette-subset}
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(torchrun:signal torchrun:requeue torchrun:time torchrun:scancel
                                 single:signal single:requeue single:time single:scancel)
[ "$(id -u)" = 0 ] || { echo "slurm_check: run as root (it installs and starts SLURM)"; exit 2; }

work=$(mktemp -d /tmp/alexnet-slurm-check.XXXXXX)
chmod 755 "$work"
mkdir -p "$work"/{log,run,state,spool,db,munge,jobs,runs,bin,data}
log=$work/log
daemons=()  # "name:pid", in start order
t_start=$SECONDS
say() { echo "slurm_check: $*"; }
alive() {  # a zombie has exited: it counts as stopped
    [ -e "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

cleanup() {
    local name pid i
    if command -v squeue > /dev/null && [ -f "$work/slurm.conf" ]; then
        # Jobs first: their processes belong to slurmstepd, which outlives slurmd.
        export SLURM_CONF=$work/slurm.conf
        squeue -h -o %i 2>/dev/null | xargs -r scancel 2>/dev/null
        for i in $(seq 60); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 1; done
    fi
    for ((i = ${#daemons[@]} - 1; i >= 0; i--)); do
        name=${daemons[i]%%:*}
        pid=${daemons[i]##*:}
        alive "$pid" || continue
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 40); do alive "$pid" || break; sleep 0.5; done
        if alive "$pid"; then
            say "$name (pid $pid) ignored SIGTERM for 20 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null
        fi
        wait "$pid" 2>/dev/null
    done
    if [ "${KEEP:-0}" = 1 ] || [ "${failed:-1}" != 0 ]; then
        say "logs kept in $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- Packages, without letting their install scripts start any service ---
needed=()
for p in slurmctld slurmd slurm-client munge slurmdbd mariadb-server; do
    [ "$(dpkg-query -W -f '${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || needed+=("$p")
done
if [ ${#needed[@]} -gt 0 ]; then
    say "installing ${needed[*]}"
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    [ -e $policy ] || { printf '#!/bin/sh\nexit 101\n' > $policy; chmod 755 $policy; own_policy=1; }
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${needed[@]}"; } \
        > "$log/apt.log" 2>&1
    code=$?
    [ $own_policy = 1 ] && rm -f $policy
    [ $code = 0 ] || { say "apt-get install failed (see $log/apt.log)"; exit 1; }
fi
for port in 16817 16818 16819 13306; do
    if (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null; then say "port $port is in use"; exit 1; fi
done

# --- The cluster: munged, MariaDB, slurmdbd, slurmctld, slurmd, each in the foreground ---
start() {  # start NAME COMMAND...: in the background, remembered for cleanup
    local name=$1
    shift
    "$@" > "$log/$name.out" 2>&1 &
    daemons+=("$name:$!")
}
[ -s /etc/munge/munge.key ] || mungekey --create > /dev/null
chown munge:munge "$work/munge"
start munged setpriv --reuid=munge --regid=munge --init-groups munged -F --socket="$work/munge/munge.sock" \
    --pid-file="$work/munge/munged.pid" --log-file="$work/munge/munged.log" --seed-file="$work/munge/seed"
mariadb-install-db --no-defaults --user=root --datadir="$work/db" --auth-root-authentication-method=socket \
    > "$log/mariadb-install.log" 2>&1 || { say "mariadb-install-db failed (see $log/mariadb-install.log)"; exit 1; }
start mariadbd mariadbd --no-defaults --user=root --datadir="$work/db" --socket="$work/run/mysql.sock" \
    --pid-file="$work/run/mysql.pid" --bind-address=127.0.0.1 --port=13306 --log-error="$log/mariadb.log"
for _ in $(seq 100); do mariadb --no-defaults -S "$work/run/mysql.sock" -e 'select 1' > /dev/null 2>&1 && break; sleep 0.2; done
mariadb --no-defaults -S "$work/run/mysql.sock" -e "create user 'slurm'@'localhost' identified by 'slurm';
    grant all on slurm_acct_db.* to 'slurm'@'localhost';" || { say "MariaDB did not start (see $log/mariadb.log)"; exit 1; }

host=$(hostname -s)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
cat > "$work/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$work/munge/munge.sock
DbdHost=localhost
DbdPort=16819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=13306
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile=$work/run/slurmdbd.pid
LogFile=$log/slurmdbd.log
EOF
chmod 600 "$work/slurmdbd.conf"
# KillWait and the requeue hold (cred_expire) are the settings that matter here; the rest is a
# minimal one-node cluster (linuxproc tracks every process a step starts, as cgroup would).
cat > "$work/slurm.conf" <<EOF
ClusterName=alexnet-check
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$work/munge/munge.sock,cred_expire=${CRED_EXPIRE:-10}
CredType=cred/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/run/slurmctld.pid
SlurmdPidFile=$work/run/slurmd.pid
SlurmctldLogFile=$log/slurmctld.log
SlurmdLogFile=$log/slurmd.log
SlurmdDebug=debug
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=16819
AccountingStoragePass=$work/munge/munge.sock
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
KillWait=30
MinJobAge=3600
MpiDefault=none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=check Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$work/slurm.conf
start slurmdbd slurmdbd -D
for _ in $(seq 100); do sacctmgr -n show cluster > /dev/null 2>&1 && break; sleep 0.2; done
sacctmgr -i add cluster alexnet-check > /dev/null || { say "slurmdbd did not start (see $log/slurmdbd.log)"; exit 1; }
start slurmctld slurmctld -D -f "$work/slurm.conf"
start slurmd slurmd -D -f "$work/slurm.conf"
for _ in $(seq 100); do [ "$(sinfo -h -o %t 2>/dev/null)" = idle ] && break; sleep 0.3; done
[ "$(sinfo -h -o %t 2>/dev/null)" = idle ] || { say "the node did not come up (see $log/slurmctld.log, slurmd.log)"; exit 1; }
say "SLURM $(sinfo -V | awk '{print $2}') up on $host in $((SECONDS - t_start)) s (work folder $work)"

# --- This checkout as `alexnet` and `torchrun` for the jobs; the dataset ---
printf '#!/bin/sh\nexec %s -m alexnet_cli "$@"\n' "$python" > "$work/bin/alexnet"
printf '#!/bin/sh\nexec %s -m torch.distributed.run "$@"\n' "$python" > "$work/bin/torchrun"
chmod 755 "$work/bin/alexnet" "$work/bin/torchrun"
export PATH=$work/bin:$PATH PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH}
if [ -d "$src/train" ]; then
    for split in train val; do
        n=40; [ $split = val ] && n=4
        for class in $(ls "$src/$split" | head -n 4); do
            mkdir -p "$work/src/$split/$class"
            ls "$src/$split/$class" | head -n $n | while read -r f; do ln -s "$src/$split/$class/$f" "$work/src/$split/$class/$f"; done
        done
    done
else
    say "$src not found: generated images instead"
    "$python" -c "from alexnet_cli.demo_data import make_demo_images; make_demo_images('$work/src', 16, 2)"
fi
alexnet prep "$work/src" "$work/data/ds.h5" --workers 2 > "$log/prep.log" 2>&1 || { say "prep failed (see $log/prep.log)"; exit 1; }
export ALEXNET_DATA=$work/data/ds.h5
epochs=4
train_args=(--epochs $epochs --batch-size 8 --workers 1 --log-every 1 --lr 0.001 --checkpoint-minutes 60)

# --- Cases ---
submit() {  # submit FORM NAME RUN_DIR [sbatch options...]: prints the job id
    local form=$1 name=$2 run=$3
    shift 3
    local extra=(--gpus 0) nproc=2 threads=1
    [ "$form" = single ] && { extra=(--devices cpu,cpu); nproc=0; threads=2; }
    NPROC_PER_NODE=$nproc OMP_NUM_THREADS=$threads sbatch --parsable --job-name="$form-$name" \
        --gpus-per-node=0 --cpus-per-task=2 --output="$work/jobs/%x-%j.log" "$@" \
        examples/slurm/alexnet.sbatch "$run" "${train_args[@]}" "${extra[@]}"
}
state() { scontrol show job "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p'; }
wait_end() {  # until the job has ended for good: a requeued one passes through PENDING, and a
    local job=$1 limit=$2 start=$SECONDS  # cancelled one stays in squeue while it completes
    while [ $((SECONDS - start)) -lt "$limit" ]; do
        if [ -z "$(squeue -h -j "$job" 2>/dev/null)" ]; then
            case "$(state "$job")" in
                COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|PREEMPTED|BOOT_FAIL|DEADLINE)
                    sleep 2  # slurmdbd records the end a moment later
                    return 0 ;;
            esac
        fi
        sleep 1
    done
    say "job $job still $(state "$job") after $limit s"
    return 1
}
wait_mid_epoch() {  # until the log shows step 5 of epoch 2
    local file=$1 start=$SECONDS
    while [ $((SECONDS - start)) -lt 300 ]; do
        grep -q "^epoch 2/$epochs step 5/" "$file" 2>/dev/null && return 0
        sleep 0.2
    done
    return 1
}
joblog() { echo "$work/jobs/$1-$2.log"; }

failed=0
declare -A reference
for form in torchrun single; do
    printf '%s\n' "${cases[@]}" | grep -q "^$form:" || continue
    run=$work/runs/$form-reference
    job=$(submit "$form" reference "$run")
    t0=$SECONDS
    wait_end "$job" 600
    if "$python" benchmarks/slurm_verify.py --case "$form uninterrupted (job $job, $((SECONDS - t0)) s)" \
        --epochs $epochs --run-dir "$run" --jobs "$job" --logs "$(joblog "$form-reference" "$job")"; then
        reference[$form]=$run/last.pt
    else
        failed=1
    fi
done

for case in "${cases[@]}"; do
    form=${case%%:*}
    how=${case##*:}
    if [ -z "${reference[$form]:-}" ]; then
        echo "FAIL $form $how: no reference run"
        failed=1
        continue
    fi
    run=$work/runs/$form-$how
    t0=$SECONDS
    verify=(--epochs $epochs --run-dir "$run" --reference "${reference[$form]}" --min-stops 1 --max-stops 1)
    case "$how" in
        signal|requeue)
            job=$(submit "$form" "$how" "$run")
            wait_mid_epoch "$(joblog "$form-$how" "$job")"
            if [ "$how" = signal ]; then
                scancel --batch --signal=USR1 "$job"  # what --signal=B:USR1@N sends at the time limit
            else
                scontrol requeue "$job"
            fi
            wait_end "$job" 900
            logs=("$(joblog "$form-$how" "$job")")
            jobs=("$job")
            verify+=(--requeued)
            ;;
        time)
            # The USR1 comes 55-115 s before the 2-minute limit (SLURM may send it up to 60 s
            # early): 5-65 s into each run, so each run it stops is requeued, and several may be.
            job=$(submit "$form" "$how" "$run" --time=2 --signal=B:USR1@55)
            wait_end "$job" 1200
            logs=("$(joblog "$form-$how" "$job")")
            jobs=("$job")
            verify+=(--max-stops 9 --requeued)
            ;;
        scancel)
            job=$(submit "$form" "$how" "$run")
            wait_mid_epoch "$(joblog "$form-$how" "$job")"
            scancel "$job"
            wait_end "$job" 300
            again=$(submit "$form" "$how-again" "$run")
            wait_end "$again" 600
            logs=("$(joblog "$form-$how" "$job")" "$(joblog "$form-$how-again" "$again")")
            jobs=("$job" "$again")
            ;;
        *)
            echo "FAIL $case: unknown case (signal, requeue, time, scancel)"
            failed=1
            continue
            ;;
    esac
    "$python" benchmarks/slurm_verify.py --case "$form $how (job ${jobs[*]}, $((SECONDS - t0)) s)" \
        --jobs "${jobs[@]}" --logs "${logs[@]}" "${verify[@]}" || failed=1
done
say "$([ $failed = 0 ] && echo "all cases passed" || echo "FAILED") in $((SECONDS - t_start)) s"
exit $failed
