#!/usr/bin/env bash
# The README's open-set figures: a Lite0 model at 224x224 trained on the three iNaturalist
# species, without others and with five Leeds species as others (both ways round), each
# evaluated against the Leeds photos it has not seen; also the focus model and the recipe CNN.
# Usage: benches/open_set.sh OUT [SHARED]   (SHARED defaults to ../shared; about 25 minutes on 2 cores)
set -euo pipefail
out=${1:?give an output folder}
shared=${2:-$(dirname "$0")/../../shared}
vlinder=${VLINDER:-$(dirname "$0")/../target/release/vlinder}
data=$shared/data/inat_uk_3species_csellwood
leeds=$shared/data/leeds_butterfly_10species
backbone=$shared/models/efficientnet-lite0/efficientnet-lite0-57934424.pth
mkdir -p "$out/A" "$out/B"
# Leeds A: its first five species folders; B: the other five (folders of links).
i=0
for species in $(ls "$leeds"); do
  part=$([ $i -lt 5 ] && echo A || echo B)
  ln -sfn "$(cd "$leeds/$species" && pwd)" "$out/$part/$species"
  i=$((i + 1))
done
lite0=(--data "$data" --model efficientnet-lite0 --image-size 224 --resize bilinear --backbone "$backbone")
evaluate() { "$vlinder" evaluate --model "$1" --data "$data" --split validation --unknown "$2" --out "$1/eval-$(basename "$2")"; }
"$vlinder" train "${lite0[@]}" --out "$out/lite0"
evaluate "$out/lite0" "$leeds"
for others in A B; do
  unknown=$([ $others = A ] && echo B || echo A)
  evaluate "$out/lite0" "$out/$unknown"
  "$vlinder" train "${lite0[@]}" --others "$out/$others" --out "$out/lite0-others-$others"
  evaluate "$out/lite0-others-$others" "$out/$unknown"
done
"$vlinder" train --data "$data" --model efficientnet-lite0 --image-size 640 --focus 320 --resize bilinear \
  --feature-copies 2 --backbone "$backbone" --out "$out/focus"
evaluate "$out/focus" "$leeds"
"$vlinder" train --data "$data" --out "$out/recipe"
evaluate "$out/recipe" "$leeds"
