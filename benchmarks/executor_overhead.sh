#!/usr/bin/env bash
# Wall time of one 96-run quick grid (all eight paper methods, both settings, synthetic data)
# through each executor on this machine, and a check that the three stores hold the same run
# ids and metrics. The data cache is warmed first so every executor starts from the same
# state. Usage: bash benchmarks/executor_overhead.sh [OUT_DIR]   (needs the [ray] and
# [slurm] extras; takes about 12 minutes on 2 CPU cores)
set -euo pipefail
out=${1:-$(mktemp -d)}
mkdir -p "$out"
export BENCH_CACHE_DIR="$out/cache"
grid=(--methods all --setting both --preset quick --no-table)
bench run "${grid[@]}" --dry-run > /dev/null          # generates the synthetic data once
for ex in local ray slurm; do
  extra=()
  [ "$ex" = slurm ] && extra=(--slurm-local)
  start=$(date +%s.%N)
  bench run "${grid[@]}" --executor "$ex" "${extra[@]}" --results "$out/$ex" \
    > "$out/$ex.log" 2>&1 || echo "$ex: bench run exited $? (see $out/$ex.log)"
  end=$(date +%s.%N)
  printf '%s\t%.1f s\n' "$ex" "$(echo "$end - $start" | bc)"
done
python - "$out" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
stores = {}
for ex in ("local", "ray", "slurm"):
    recs = [json.loads(p.read_text()) for p in (out / ex / "main").glob("*/record.json")]
    stores[ex] = {r["run_id"]: (r["status"], r.get("auroc"), r.get("auprc")) for r in recs}
    print(f"{ex}: {len(recs)} records, "
          f"{sum(s == 'done' for s, _, _ in stores[ex].values())} done")
same = stores["local"] == stores["ray"] == stores["slurm"]
print("same run ids and metrics across executors:", same)
EOF
