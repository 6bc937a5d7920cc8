#!/usr/bin/env bash
# The one GPU check (issue 15): the checks of benchmarks/gpu_check.py (synthetic images/s of
# both networks in fp32, bf16 AMP, + channels_last, + compile; real data end to end with CPU
# and with GPU decoding against synthetic; nvJPEG's pixels; the loader's GPU path against the
# decode bound; 10-crop eval with CPU and GPU decoding; the tower split;
# --resume; 2-process torchrun; peak GPU memory), about 5 minutes on one H100/H200, stopped at
# 7m50s. Writes $OUT/gpu_check.md (the table), $OUT/gpu_check.json and $OUT/gpu_check.log
# (OUT defaults to .); exits non-zero when a check failed or could not run.
#
# It installs nothing from the network: the GPU machine brings torch and torchvision, and
# these travel in the checkout, ignored by git (.gitignore):
#   .whl/                          simplejpeg's wheel for the machine's Python (3.12 there), for
#                                  prep and the CPU decoder (--decode gpu needs none):
#       python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#           --implementation cp --platform manylinux_2_17_x86_64 -d .whl simplejpeg==1.9.0
#   .gpu-data/imagenette-subset/   cp -r ../shared/data/imagenette-subset .gpu-data/  (31 MB)
# Without the wheel prep cannot write JPEG shards and the real-data checks are NOT RUN.
#
#   bash benchmarks/gpu_check.sh        # IMAGENETTE=path to use another copy of the subset
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export CUBLAS_WORKSPACE_CONFIG=:4096:8  # deterministic cuBLAS where the resume check asks for it
if ls .whl/*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpu-check-site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/gpu-check-site"
fi
python3 -c "import simplejpeg" 2> /dev/null \
    || echo "gpu_check: simplejpeg missing: carry its wheel in .whl/ (top of $0); real-data checks need it"
src="${IMAGENETTE:-}"
for d in ../shared/data/imagenette-subset .gpu-data/imagenette-subset; do
    if [ -z "$src" ] && [ -d "$d/train" ]; then src="$d"; fi
done
[ -n "$src" ] || echo "gpu_check: no imagenette-subset (set IMAGENETTE or carry .gpu-data/): real-data checks NOT RUN"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$out/gpu_check.log"
timeout 470 python3 benchmarks/gpu_check.py ${src:+--src "$src"} --work /tmp/gpu-check --out "$out" 2>&1 \
    | tee -a "$out/gpu_check.log"
code=${PIPESTATUS[0]}
if [ "$code" -eq 124 ]; then
    echo "gpu_check: stopped at 470 s; $out/gpu_check.md holds the checks that finished" | tee -a "$out/gpu_check.log"
fi
exit "$code"
