#!/usr/bin/env bash
# Make the models that benchmarks/uncertainty.py compares against the
# equivariance error: a 4-model deep ensemble (the shipped recipe,
# examples/train_model/options_periodic.yaml, seeds 1-4) and an LLPR model
# (metatrain's `llpr` architecture on the shipped model's checkpoint). Also
# writes the EMT data the benchmark uses. Nothing here is shipped.
#
# Usage:  bash benchmarks/uncertainty_models.sh [SCRATCH_DIR] [STAGE ...]
#   STAGE: data, ensemble, llpr (default: all three, in this order)
# Environment: PYTHON / MTT (default: python / mtt from PATH), JOBS (trainings
#   run in parallel, one thread each; default 1), CKPT (the shipped model's
#   checkpoint; default examples/data/pet-emt-cual.ckpt), EPOCHS (default 30).
# Cost: measured here (several jobs side by side on a shared 2-core machine) each
# training took about 1 h of wall time and LLPR 2 min; each stage writes time.txt.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
RECIPE="$REPO/examples/train_model"
SCRATCH="${1:-/tmp/symmd_uncertainty}"
shift || true
STAGES="${*:-data ensemble llpr}"
PYTHON="${PYTHON:-python}"
MTT="${MTT:-mtt}"
JOBS="${JOBS:-1}"
EPOCHS="${EPOCHS:-30}"
CKPT="${CKPT:-$REPO/examples/data/pet-emt-cual.ckpt}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

mkdir -p "$SCRATCH"
cd "$SCRATCH"
SECONDS=0

for stage in $STAGES; do
case "$stage" in
data)
    # training set of the shipped model (seed 0), the calibration set for the
    # trust levels (seed 777) and the held-out test set (seed 12345, the one
    # examples/train_model/evaluate.py uses): three disjoint EMT samples
    "$PYTHON" "$RECIPE/generate_data.py" --seed 0 --n-periodic 300 --n-cluster 0 --prefix train_
    "$PYTHON" "$RECIPE/generate_data.py" --seed 777 --n-periodic 50 --n-cluster 0 --prefix calib_
    "$PYTHON" "$RECIPE/generate_data.py" --seed 12345 --n-periodic 50 --n-cluster 0 --prefix test_
    ;;
ensemble)
    train() {  # $1 = seed
        mkdir -p "ensemble/seed_$1"
        (
            cd "ensemble/seed_$1"
            ln -sf ../../train_periodic.xyz .
            start=$SECONDS
            "$MTT" train "$RECIPE/options_periodic.yaml" -o model.pt \
                -r seed="$1" -r architecture.training.num_epochs="$EPOCHS" > train.out 2>&1
            echo "seed $1: $((SECONDS - start)) s" > time.txt
        )
    }
    running=0
    for seed in 1 2 3 4; do
        if [ -f "ensemble/seed_$seed/model.pt" ]; then continue; fi
        train "$seed" &
        running=$((running + 1))
        if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
    done
    wait
    cat ensemble/seed_*/time.txt 2>/dev/null || true
    ;;
llpr)
    mkdir -p llpr
    (
        cd llpr
        ln -sf ../train_periodic.xyz .
        start=$SECONDS
        "$MTT" train "$HERE/uncertainty_llpr.yaml" -o model.pt \
            -r architecture.training.model_checkpoint="$(realpath "$CKPT")" > train.out 2>&1
        echo "llpr: $((SECONDS - start)) s" > time.txt
        cat time.txt
    )
    ;;
*)
    echo "unknown stage $stage (data, ensemble, llpr)" >&2
    exit 2
    ;;
esac
done
echo "done in $SECONDS s: $SCRATCH"
