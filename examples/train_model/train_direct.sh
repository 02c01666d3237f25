#!/usr/bin/env bash
# Regenerate the direct-force model symmd/data/pet-emt-cual-direct.pt: EMT data
# (bulk Cu/Al cells and clusters, thermal disorder), a tiny PET with direct
# force and stress heads trained in two stages with metatrain, export, the
# learning curves (direct_curves.json) and the held-out evaluation
# (direct_metrics.json). See README.md, "The direct-force model".
#
# Usage (from anywhere):  bash examples/train_model/train_direct.sh [SCRATCH_DIR]
# Environment: PYTHON / MTT (default: python / mtt from PATH),
#              EPOCHS_NC (stage 1, default 40), EPOCHS_JOINT (stage 2, default 20).
# One CPU thread; about 30 + 60 min on a quiet 2-core machine.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
SCRATCH="${1:-/tmp/direct_run}"
PYTHON="${PYTHON:-python}"
MTT="${MTT:-mtt}"
EPOCHS_NC="${EPOCHS_NC:-40}"
EPOCHS_JOINT="${EPOCHS_JOINT:-20}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

mkdir -p "$SCRATCH"
SCRATCH="$(cd "$SCRATCH" && pwd)"
cd "$SCRATCH"
cp "$HERE"/options_direct_nc.yaml "$HERE"/options_direct.yaml "$HERE"/metadata_direct.yaml .
SECONDS=0

# 1. data: training set (seed 0) and held-out set (seed 12345), EMT labels
gen() {  # $1 = seed, $2 = bulk cells, $3 = clusters, $4 = prefix
    "$PYTHON" "$HERE/generate_data.py" --seed "$1" --n-periodic 0 --n-cluster 0 \
        --n-bulk "$2" --n-nanocluster "$3" --prefix "$4"
}
[ -f train_direct.xyz ] || gen 0 400 400 train_
[ -f test_direct.xyz ] || gen 12345 60 60 test_

# 2. stage 1: energy + direct heads, no conservative forces
mkdir -p run_nc
(
    cd run_nc
    ln -sf ../train_direct.xyz .
    "$MTT" train ../options_direct_nc.yaml -o model_nc.pt \
        -r architecture.training.num_epochs="$EPOCHS_NC" > train.out 2>&1
)
echo "stage 1 done after ${SECONDS} s"

# 3. stage 2: everything together, from the stage-1 weights
mkdir -p run_joint
(
    cd run_joint
    ln -sf ../train_direct.xyz .
    "$MTT" train ../options_direct.yaml -o model_direct.pt \
        -r architecture.training.finetune.read_from="$SCRATCH/run_nc/model_nc.ckpt" \
        -r architecture.training.num_epochs="$EPOCHS_JOINT" > train.out 2>&1
)
echo "stage 2 done after ${SECONDS} s"

# 4. export (with metadata) and ship
"$MTT" export run_joint/model_direct.ckpt -o pet-emt-cual-direct.pt -m metadata_direct.yaml
cp pet-emt-cual-direct.pt "$REPO/symmd/data/"
ls -l "$REPO/symmd/data/pet-emt-cual-direct.pt"

# 5. learning curves and held-out evaluation (committed JSON files)
"$PYTHON" "$HERE/learning_curves.py" --json "$HERE/direct_curves.json" \
    stage1=run_nc/train.out stage2=run_joint/train.out
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" "$HERE/evaluate_direct.py" \
    --data-dir "$SCRATCH" --model "$REPO/symmd/data/pet-emt-cual-direct.pt" \
    --json "$HERE/direct_metrics.json"
echo "total time ${SECONDS} s"
