#!/usr/bin/env bash
# GPU check: the quick sweep of every paper method on the GPU (CUDA code paths, several runs
# packed per GPU) and per-step throughput at the paper's image size.
# Usage: OUT=/some/dir bash benchmarks/gpu_check.sh [WHEEL]
#   WHEEL: an osad-bench wheel to install offline (pip wheel --no-deps . -w DIR); without it
#   the checkout is installed in editable mode.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export BENCH_CACHE_DIR=${BENCH_CACHE_DIR:-/tmp/bench_cache}
if [ $# -ge 1 ]; then
  python3 -m pip install -q --no-deps --no-index "$1" >"$OUT/install.log" 2>&1
else
  python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1
fi
cd /tmp  # run the installed package, not the checkout's folders
python3 -c "import bench.methods, torch, torchvision; print('torch', torch.__version__, \
'torchvision', torchvision.__version__, torch.cuda.get_device_name(0))" \
  || { cat "$OUT/install.log"; exit 1; }
B="python3 -m bench.cli"
echo "== quick sweep on the GPU: all paper methods, both settings, 4 runs per GPU"
start=$(date +%s)
timeout 240 $B run --methods all --setting both --preset quick --gpus all --jobs-per-gpu 4 \
  --results /tmp/gpu_res --no-table >"$OUT/quick_sweep.log" 2>&1
echo "exit $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/quick_sweep.log"
tail -n 3 "$OUT/quick_sweep.log"
$B status --results /tmp/gpu_res | head -n 20
$B report --results /tmp/gpu_res --out "$OUT/report" --format markdown,csv >/dev/null 2>&1
echo "== throughput at 448 px, batch 48 (paper size); KDAD at its 128 px"
timeout 150 $B perf --methods devnet,flos,minns,saoe,mlep,deepsad,dra --img-size 448 \
  --steps 10 --out "$OUT/perf_448.csv" 2>&1 | grep -v Warning | tee "$OUT/perf.log"
timeout 60 $B perf --methods kdad --img-size 128 --steps 10 --out "$OUT/perf_kdad.csv" 2>&1 \
  | grep -v Warning | tee -a "$OUT/perf.log"
# Issue 13: complete paper-preset runs beside their compute floor, fp32 and bf16 (the device
# machine has no internet, so no ImageNet weights: --weights none; the cost is the same).
for p in fp32 bf16; do
  echo "== bench perf --full, $p"
  timeout 240 $B perf --full --methods dra,devnet --weights none --precision $p \
    --csv "$OUT/perf_full_$p.csv" 2>&1 | grep -v Warning | tee -a "$OUT/perf_full.log"
done
# Accuracy: the same splits and seeds in fp32 and bf16 (DRA, paper preset, synthetic data,
# hard setting, one known class, three seeds); the report shows both configurations.
echo "== bf16 vs fp32 AUC-ROC, DRA paper preset, 3 seeds"
for p in fp32 bf16; do
  timeout 300 $B run --methods dra --datasets synthetic --preset paper --weights none \
    --setting hard --subsets weave --known-classes hole --shots 10 --seeds 3 --precision $p \
    --gpus all --jobs-per-gpu 3 --results /tmp/prec_res --no-table >"$OUT/precision_$p.log" 2>&1
  echo "$p: exit $?"
done
$B report --results /tmp/prec_res --out "$OUT/precision_report" --format markdown,csv \
  >/dev/null 2>&1; cat "$OUT/precision_report/"*.md 2>/dev/null | head -n 30
