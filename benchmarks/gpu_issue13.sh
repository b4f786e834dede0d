#!/usr/bin/env bash
# Issue 13's GPU figures in one call of about 9 minutes, for a session that is lent a GPU:
# the CUDA tests of stacked training, one step lone vs stacked (stack_step.py), cells/hour by
# workers and stack size (throughput.py), and how far the paper-mosi UME + IME grid (six
# methods, 5 seeds, full epochs) gets in its remaining minutes with 5-stacks on 4 workers.
# Nothing is compared against a threshold here: the figures go to benchmarks/README.md.
#
# Run from the repository root, CMU-MOSI copied into an ignored folder that travels with the
# call (the device machine has torch, but not ../shared):
#   echo /.devdata/ >> .git/info/exclude; mkdir -p .devdata; cp -r ../shared/data/CMUMOSI .devdata/
#   device run: carry [".devdata"], timeout_s 600, command "bash benchmarks/gpu_issue13.sh"
# Every log and JSON lands in $OUT (default runs/gpu-issue13); at most 8 files.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-issue13}
DATA=${DATA:-.devdata/CMUMOSI}
GRID_SECONDS=${GRID_SECONDS:-150}
DEVICE=${DEVICE:-cuda}  # cpu: a dry run of the commands here (each cut by its time limit)
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PY:-python3}

# The presets read ../shared/data/CMUMOSI relative to the repository root.
if [ ! -e ../shared/data/CMUMOSI ]; then
    mkdir -p ../shared/data && ln -s "$PWD/$DATA" ../shared/data/CMUMOSI
fi
{ nvidia-smi; $PY -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"; } > "$OUT/machine.txt" 2>&1

step() {  # step NAME SECONDS CMD...: run CMD with a time limit, its output in $OUT/NAME.log
    local name=$1 limit=$2; shift 2
    echo "== $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    echo "== $name: exit $? after $((SECONDS - t0)) s"
    tail -n 15 "$OUT/$name.log"
}

step pytest 120 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py \
    "tests/test_stacked.py::test_stacked_on_cuda_matches_cpu"
step stack-step 90 $PY benchmarks/stack_step.py --device "$DEVICE" --members 16 --groups 1,4,16 \
    --out "$OUT/stack-step.json"
step throughput 240 $PY benchmarks/throughput.py --device "$DEVICE" --workers 1,4 --stacks 4,16 --cells 16 \
    --epochs 10 --out "$OUT/throughput.json"
# The whole grid is the 20-minute target; one call cannot hold it. Its rate over the first
# minutes: cells finished (cells.jsonl) per elapsed second, each row with its job's peak_mb.
rm -rf runs/gpu-grid
step grid "$GRID_SECONDS" $PY -m iteacnet.cli benchmark --preset paper-mosi --protocols ume,ime \
    --seeds 0,1,2,3,4 --stack 5 --workers 4 --set "train.device=\"$DEVICE\"" --out runs/gpu-grid
cp runs/gpu-grid/cells.jsonl "$OUT/grid-cells.jsonl" 2>/dev/null
echo "grid: $(wc -l < runs/gpu-grid/cells.jsonl 2>/dev/null || echo 0) cells finished in ${GRID_SECONDS} s"
