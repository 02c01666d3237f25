#!/usr/bin/env bash
# Regenerate the EMT data, train the two tiny PET models with metatrain, export
# them as metatomic models and copy them to symmd/data/.
#
# Usage (from anywhere):  bash examples/train_model/train.sh [SCRATCH_DIR]
# Environment: PYTHON / MTT (default: python / mtt from PATH),
#              EPOCHS_PERIODIC, EPOCHS_CLUSTER (override num_epochs).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
SCRATCH="${1:-/tmp/train_run}"
PYTHON="${PYTHON:-python}"
MTT="${MTT:-mtt}"
EPOCHS_PERIODIC="${EPOCHS_PERIODIC:-30}"
EPOCHS_CLUSTER="${EPOCHS_CLUSTER:-60}"

mkdir -p "$SCRATCH"
cd "$SCRATCH"
cp "$HERE"/options_periodic.yaml "$HERE"/options_cluster.yaml "$HERE"/metadata_*.yaml .

# 1. data (training set: seed 0; held-out set for evaluate.py: seed 12345)
"$PYTHON" "$HERE/generate_data.py" --seed 0 --n-periodic 300 --n-cluster 300 --prefix train_
"$PYTHON" "$HERE/generate_data.py" --seed 12345 --n-periodic 50 --n-cluster 50 --prefix test_

# 2. training; the two runs go in parallel, one CPU thread each, in separate
#    directories so that their outputs/ folders do not mix
train() {  # $1 = periodic|cluster, $2 = epochs
    mkdir -p "run_$1"
    (
        cd "run_$1"
        ln -sf ../train_$1.xyz .
        OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$MTT" train ../options_$1.yaml \
            -o model_$1.pt -r architecture.training.num_epochs=$2 > train.out 2>&1
    )
}
train periodic "$EPOCHS_PERIODIC" &
PID_P=$!
train cluster "$EPOCHS_CLUSTER" &
PID_C=$!
wait $PID_P
wait $PID_C

# 3. export the final checkpoints (with metadata) as metatomic models
"$MTT" export run_periodic/model_periodic.ckpt -o pet-emt-cual.pt -m metadata_periodic.yaml
"$MTT" export run_cluster/model_cluster.ckpt -o pet-emt-cu-cluster.pt -m metadata_cluster.yaml

mkdir -p "$REPO/symmd/data"
cp pet-emt-cual.pt pet-emt-cu-cluster.pt "$REPO/symmd/data/"
ls -l "$REPO"/symmd/data/pet-emt-*.pt

# 3b. the metatrain checkpoint of the shipped periodic model (for fine-tuning
#     and LLPR): its weights in this run's checkpoint, checked on the test set
"$PYTHON" "$HERE/shipped_checkpoint.py" run_periodic/model_periodic.ckpt \
    "$REPO/symmd/data/pet-emt-cual.pt" "$REPO/examples/data/pet-emt-cual.ckpt" \
    --check test_periodic.xyz

# 4. evaluation against EMT on the held-out set
"$PYTHON" "$HERE/evaluate.py" --data-dir "$SCRATCH" --model-dir "$REPO/symmd/data"
