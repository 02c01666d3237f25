#!/usr/bin/env bash
# Train the same tiny PET on EMT data (flat plates by default) twice -- with metatrain's default
# random O(3) augmentation and without it -- keeping one checkpoint per epoch, and
# keep a series of them as small checkpoints (weights only):
#
#   OUTDIR/aug/epoch_XXX.ckpt    (mtt train, default augmentation)
#   OUTDIR/noaug/epoch_XXX.ckpt  (python train_no_augmentation.py, augmentation off)
#
# XXX = number of completed training epochs (metatrain's model_<i>.ckpt is written
# after 0-based epoch index i, so XXX = i + 1). Each file holds the weights *at*
# that epoch (see epoch_checkpoint.py), not the best so far.
#
# Usage:  bash examples/train_model/train_epochs.sh [OUTDIR]   (default /tmp/epochs)
# Environment: PYTHON / MTT (default: python / mtt from PATH),
#              NUM_EPOCHS (default 40), EXPORT_EPOCHS (default below),
#              DATA (plate | cluster, default plate: 300 flat clusters, all in
#              the xy plane, so that augmentation matters; see generate_data.py).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUTDIR="${1:-/tmp/epochs}"
PYTHON="${PYTHON:-python}"
MTT="${MTT:-mtt}"
NUM_EPOCHS="${NUM_EPOCHS:-40}"
DATA="${DATA:-plate}"
EXPORT_EPOCHS="${EXPORT_EPOCHS:-1 2 3 4 6 8 12 16 20 25 30 35 40}"

mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
cd "$OUTDIR"
cp "$HERE/options_epochs.yaml" .
SECONDS=0

# 1. training data: same generator and seed as train.sh (seed 0), plus 300 plates
if [ ! -f train_plate.xyz ]; then
    "$PYTHON" "$HERE/generate_data.py" --seed 0 --n-periodic 300 --n-cluster 300 --n-plate 300 --prefix train_
fi

# 2. the two trainings, in parallel, one CPU thread each, separate directories
train() {  # $1 = aug|noaug
    rm -rf "run_$1"
    mkdir -p "run_$1"
    (
        cd "run_$1"
        ln -sf "../train_$DATA.xyz" train.xyz
        if [ "$1" = aug ]; then
            cmd=("$MTT" train)
        else
            cmd=("$PYTHON" "$HERE/train_no_augmentation.py")
        fi
        OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "${cmd[@]}" ../options_epochs.yaml \
            -o model.pt -r architecture.training.num_epochs="$NUM_EPOCHS" \
            > train.out 2>&1
    )
}
train aug &
PID_A=$!
train noaug &
PID_N=$!
wait $PID_A
wait $PID_N
echo "training done after ${SECONDS} s"

# 3. keep the selected epochs as small checkpoints with the weights *at* that
#    epoch (not the best so far); symmd loads them eagerly, so forward hooks
#    reach every layer
for run in aug noaug; do
    ckdir="$(dirname "$(ls run_$run/outputs/*/*/model_0.ckpt)")"
    mkdir -p "$run"
    for e in $EXPORT_EPOCHS; do
        i=$((e - 1))
        name="$(printf 'epoch_%03d' "$e")"
        read -r ep best < <("$PYTHON" "$HERE/epoch_checkpoint.py" \
            "$ckdir/model_$i.ckpt" "$run/$name.ckpt")
        echo "$run $name: checkpoint epoch index $ep (best so far: $best)"
    done
done
ls -l aug/*.ckpt noaug/*.ckpt
echo "total time ${SECONDS} s"
