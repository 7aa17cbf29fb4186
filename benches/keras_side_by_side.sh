#!/usr/bin/env bash
# Trains vlinder's recipe model and the Keras recipe (../shared/anchors/keras_recipe.py) on the
# same seeded 80/20 split of the same photos, one after the other on this machine, and prints
# both results. vlinder's split is materialised from its split.csv as symlinks for Keras.
#
# usage: benches/keras_side_by_side.sh DATA_DIR OUT_DIR [EPOCHS] [extra vlinder train flags...]
#   KERAS_PYTHON  python of a venv with tensorflow-cpu 2.21.0 and keras 3.15.1 (default /tmp/keras-anchor/bin/python)
#   SHARED        the shared folder (default ../shared)
#   KERAS_FLAGS   extra flags for keras_recipe.py, e.g. --no-augment
set -euo pipefail
data=$1; out=$2; epochs=${3:-50}; shift $(( $# < 3 ? $# : 3 ))
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED:-$here/../shared}
python=${KERAS_PYTHON:-/tmp/keras-anchor/bin/python}
mkdir -p "$out"
cargo build --release --quiet --manifest-path "$here/Cargo.toml"
"$here/target/release/vlinder" train --data "$data" --validation-split 0.2 --seed 42 \
  --epochs "$epochs" --out "$out/vlinder" "$@" 2>&1 | tee "$out/vlinder.log"

# The same split for Keras: train/ and validation/ folders of symlinks.
tail -n +2 "$out/vlinder/split.csv" | while IFS=, read -r path species part; do
  mkdir -p "$out/split/$part/$species"
  ln -sf "$(readlink -f "$path")" "$out/split/$part/$species/"
done
"$python" "$shared/anchors/keras_recipe.py" --train "$out/split/train" --validation "$out/split/validation" \
  --epochs "$epochs" --threads "$(nproc)" ${KERAS_FLAGS:-} 2>&1 | tee "$out/keras.log"
