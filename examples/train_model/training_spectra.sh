#!/usr/bin/env bash
# One command for the training-time view: train the tiny PET on flat EMT plates
# with and without rotational augmentation (train_epochs.sh, skipped when OUTDIR
# already holds the checkpoints), then take the character spectra of its outputs
# and layers at every saved epoch on held-out plates, and draw the heatmaps
# (lambda x epoch; rows: aug, noaug, log10 noaug/aug).
#
# Usage:  bash examples/train_model/training_spectra.sh [OUTDIR] [FIGURE]
#         (defaults /tmp/epochs and docs/figures/training_spectra.png; the JSON
#         with every number goes next to the figure)
# Environment: PYTHON / SYMMD (default python / symmd from PATH), and those of
#              train_epochs.sh.  About 2 min of training + 3.5 min of analysis
#              on 2 CPU cores.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
OUTDIR="${1:-/tmp/epochs}"
FIGURE="${2:-$REPO/docs/figures/training_spectra.png}"
PYTHON="${PYTHON:-python}"
SYMMD="${SYMMD:-symmd}"
SECONDS=0

if [ ! -f "$OUTDIR/noaug/epoch_001.ckpt" ]; then
    bash "$HERE/train_epochs.sh" "$OUTDIR"
fi
mkdir -p "$(dirname "$FIGURE")"
FIGURE="$(cd "$(dirname "$FIGURE")" && pwd)/$(basename "$FIGURE")"
cd "$OUTDIR"
# held-out plates (another seed than the training set)
if [ ! -f test_plate.xyz ]; then
    "$PYTHON" "$HERE/generate_data.py" --seed 12345 --n-periodic 0 --n-cluster 0 --n-plate 20 --prefix test_
fi

LAYERS=(backend.gnn_layers.0 backend.gnn_layers.1 backend.node_heads.energy.0)
NAMES=(energy forces mtt::aux::energy_last_layer_features
       "layer:backend.gnn_layers.0[0]" "layer:backend.gnn_layers.0[1]"
       "layer:backend.gnn_layers.1[0]" "layer:backend.gnn_layers.1[1]"
       layer:backend.node_heads.energy.0)
"$SYMMD" training aug=aug noaug=noaug --structures test_plate.xyz --index :6 \
    --max-lambda 4 --layers "${LAYERS[@]}" --names "${NAMES[@]}" \
    --plot "$FIGURE" --json "${FIGURE%.*}.json"
echo "total time ${SECONDS} s"
