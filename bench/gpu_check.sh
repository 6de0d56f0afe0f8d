#!/usr/bin/env bash
# One-shot check of persyn's GPU path on a fresh GPU machine, before a long build. Prints one table.
#
#   bench/gpu_check.sh            its own venv with persyn[gpu] (vLLM and the CUDA torch it pins):
#                                 pytest tests/test_vllm_engine.py; `persyn doctor` with vLLM teachers,
#                                 student and reward model (tiny models built on the spot); a tiny
#                                 `dvc repro` on vLLM, then on the transformers engine on CUDA with the
#                                 same params: greedy answers equal, learnability and raw reward within 1e-3
#   bench/gpu_check.sh --no-vllm  no network, no vLLM, the Python already there (torch, transformers,
#                                 peft): the transformers engine on CUDA (bf16 generation, learnability,
#                                 the reward model, training) and CTranslate2 if it imports; a few minutes
#
# Work goes to $GPU_CHECK_DIR (default: a new /tmp/persyn-gpu-check.*); each step's log is kept there.
# Exit status 0 only if every check passed.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${GPU_CHECK_DIR:-$(mktemp -d /tmp/persyn-gpu-check.XXXXXX)}
RESULTS=$WORK/results.tsv
mkdir -p "$WORK" && : > "$RESULTS"
export DVC_NO_ANALYTICS=1 TOKENIZERS_PARALLELISM=false

# step NAME COMMAND...: run it with its output in $WORK/NAME.log, append one row to the table
step() {
    local name=$1 start=$SECONDS status=ok
    shift
    "$@" > "$WORK/$name.log" 2>&1 || status=FAILED
    local detail
    detail=$(grep -v '^\s*$' "$WORK/$name.log" | tail -n 1 | tr '\t' ' ' | cut -c1-160)
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" "$detail" >> "$RESULTS"
    [ "$status" = ok ]
}

in_project() {  # in_project DIR COMMAND...: run in a DVC project with its own request cache
    local dir=$1
    shift
    (cd "$dir" && PERSYN_CACHE_DIR="$dir-cache" "$@")
}

finish() {
    "$PYTHON" "$ROOT/bench/gpu_check.py" table "$RESULTS"
    local status=$?
    echo "logs: $WORK"
    exit $status
}

if [ "${1:-}" = "--no-vllm" ]; then
    PYTHON=${PYTHON:-python3}
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's persyn, nothing installed
    step "environment" "$PYTHON" -c "import torch, transformers; assert torch.cuda.is_available(), 'no CUDA device'; \
print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name(0))"
    step "tiny models" "$PYTHON" "$ROOT/bench/gpu_check.py" models "$WORK/models"
    step "engine checks" "$PYTHON" "$ROOT/bench/gpu_check.py" engines "$WORK/models" --device cuda --results "$RESULTS"
    finish
fi

step "venv with persyn[gpu]" bash -c "python3 -m venv '$WORK/venv' && '$WORK/venv/bin/pip' install -q -e '$ROOT[gpu,test]'" \
    || { PYTHON=python3; finish; }
PYTHON=$WORK/venv/bin/python
export PATH="$WORK/venv/bin:$PATH"
step "environment" "$PYTHON" -c "import torch, vllm; assert torch.cuda.is_available(), 'no CUDA device'; \
print('torch', torch.__version__, 'vllm', vllm.__version__, torch.cuda.get_device_name(0))"
step "pytest test_vllm_engine" bash -c "cd '$ROOT' && '$PYTHON' -m pytest -q -p no:cacheprovider tests/test_vllm_engine.py tests/test_vllm_checks.py"
step "tiny models" "$PYTHON" "$ROOT/bench/gpu_check.py" models "$WORK/models"
for engine in vllm transformers; do
    step "project ($engine)" "$PYTHON" "$ROOT/bench/gpu_check.py" project "$WORK/$engine" "$engine" "$WORK/models"
done
step "persyn doctor (vllm)" in_project "$WORK/vllm" persyn doctor
step "dvc repro (vllm)" in_project "$WORK/vllm" dvc repro
step "dvc repro (transformers cuda)" in_project "$WORK/transformers" dvc repro
step "compare vllm / transformers" "$PYTHON" "$ROOT/bench/gpu_check.py" compare "$WORK/vllm" "$WORK/transformers" \
    --results "$RESULTS"
finish
