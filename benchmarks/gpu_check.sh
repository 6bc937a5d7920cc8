#!/usr/bin/env bash
# One GPU check, under 5 minutes: training images/s of the paper's network vs torchvision's
# AlexNet (synthetic batches of 128) plain, with --amp, with --channels-last and with both;
# the paper's split with both towers on one GPU (and on two GPUs if there are two); a short
# imagenette-subset run. Results go to $OUT/gpu_check.txt when OUT is set (else ./gpu_check.txt).
#
#   bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
out="${OUT:-.}"
mkdir -p "$out"
log="$out/gpu_check.txt"
: > "$log"
say() { echo "$@" | tee -a "$log"; }
step() {  # step SECONDS TITLE COMMAND...: run with a time limit, keep the last lines in the log
    local limit=$1 title=$2
    shift 2
    say ""
    say "## $title"
    say "\$ $*"
    local start=$SECONDS
    timeout "$limit" "$@" > "$out/step.log" 2>&1
    local code=$?
    tail -n 25 "$out/step.log" | tee -a "$log"
    say "(exit $code, $((SECONDS - start)) s)"
}

say "# gpu_check $(date -u +%FT%TZ)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$log"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count())" 2>&1 | tee -a "$log"

bench="python benchmarks/bench_train.py --gpus 1 --batch-size 128 --steps 20 --rounds 1"
step 60 "train images/s, fp32" $bench
step 60 "train images/s, --amp (bf16)" $bench --amp
step 60 "train images/s, --channels-last" $bench --channels-last
step 60 "train images/s, --amp --channels-last" $bench --amp --channels-last
step 60 "the split: both towers on cuda:0 (torchvision on cuda:0)" \
    python benchmarks/bench_train.py --devices cuda:0,cuda:0 --batch-size 128 --steps 20 --rounds 1
if [ "$(python -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
    step 60 "the split over two GPUs (--devices cuda:0,cuda:1)" \
        python benchmarks/bench_train.py --devices cuda:0,cuda:1 --batch-size 128 --steps 20 --rounds 1
fi

data="${IMAGENETTE:-../shared/data/imagenette-subset}"
if [ -d "$data/train" ]; then
    step 120 "imagenette-subset: 3 epochs, batch 128, bias 0.1, --amp" \
        python benchmarks/bench_convergence.py --src "$data" --cache "$out/cache" --run-dir "$out/imagenette-run" \
        --epochs 3 --batch-size 128 --gpus 1 --workers 8 --extra "--amp"
    cp "$out/imagenette-run/metrics.csv" "$out/imagenette-metrics.csv" 2>/dev/null
    rm -rf "$out/cache" "$out/imagenette-run"
else
    say ""
    say "## imagenette-subset: skipped ($data not found; set IMAGENETTE=path/to/imagenette-subset)"
fi
rm -f "$out/step.log"
say ""
say "done in $SECONDS s"
