#!/usr/bin/env bash
# The CUDA tests and the GPU targets' numbers in one short run, for a session lent a GPU
# machine (the `device` tool: 15 minutes at most, one call; no network there).
#
#   bash benchmarks/gpu_check.sh prepare   # here, once: data and wheels into .gpu_check/
#   bash benchmarks/gpu_check.sh           # there, carrying .gpu_check (about 5 minutes)
#
# The GPU image has torch and torch_geometric but neither RDKit nor OGB: `prepare`
# downloads their wheels for its Python 3.12 (the registry is reachable here, not there)
# and copies Tox21 and 2,000 ZINC molecules from ../shared/data. The run installs the
# wheels under /tmp/site, runs tests/test_cuda.py (including the training step under
# torch.cuda.set_sync_debug_mode("error"), and --compile's layers against eager ones) and
# benchmarks/gpu_check.py (Tox21 epoch, small and base pretraining molecules/s against the
# targets, each in fp32 and bf16; small also at batch 256 in fp32, to tell a launch-bound
# step from a compute-bound one; last, the Tox21 epoch and small pretraining in fp32 with
# the layers compiled, as finetune/pretrain --compile do). Under 10 minutes in all (the
# device tool's limit for one command); the eager numbers print before the compiled ones.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=.gpu_check

if [[ "${1:-}" == "prepare" ]]; then
    SHARED=${SHARED:-../shared/data}
    mkdir -p "$DATA"
    grep -qx '/.gpu_check/' .git/info/exclude 2>/dev/null || echo '/.gpu_check/' >> .git/info/exclude
    cp "$SHARED/moleculenet/tox21.csv" "$DATA/tox21.csv"
    python3 - "$SHARED/pretrain/zinc_moses_test.csv.gz" "$DATA/zinc.csv.gz" <<'PY'
import gzip, sys
with gzip.open(sys.argv[1], "rt") as src, gzip.open(sys.argv[2], "wt") as dst:
    for i, line in enumerate(src):
        if i > 2000:
            break
        dst.write(line)
PY
    PIP=${PIP:-.venv/bin/pip}
    for wheel in rdkit==2025.9.1 ogb==1.3.6; do
        "$PIP" download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d "$DATA" "$wheel"
    done
    du -sh "$DATA"
    echo "prepared $DATA; on the GPU machine: bash benchmarks/gpu_check.sh (carry $DATA)"
    exit 0
fi

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$DATA"/*.whl
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, torch_geometric, rdkit; print('torch', torch.__version__, 'pyg', torch_geometric.__version__, 'rdkit', rdkit.__version__, 'cuda', torch.cuda.is_available())"
tests=0  # a failing CUDA test does not keep the numbers from being measured
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py || tests=$?
timeout 380 python3 benchmarks/gpu_check.py --data "$DATA" --device cuda
exit "$tests"
