#!/usr/bin/env bash
# Peak memory (and time) of `vlinder queue import` on a zipped Darwin Core Archive of N records
# (default 100,000) against the same records as a CSV, with every photo fetched from a web server
# on 127.0.0.1 (Python's http.server): one to three photos a record, 1.75 on average, in a Simple
# Multimedia extension, the core in GBIF's layout (tab-separated, occurrenceID, scientificName,
# eventDate). The model is a quick recipe model on the sample (the network is not what is
# measured). Needs target/release/vlinder (or VLINDER) and python3.
# Usage: benches/archive_import.sh OUT [N]
set -euo pipefail
out=${1:?give an output folder}
n=${2:-100000}
repo=$(cd "$(dirname "$0")/.." && pwd)
vlinder=${VLINDER:-$repo/target/release/vlinder}
mkdir -p "$out/photos" "$out/dwca"
out=$(cd "$out" && pwd)
"$vlinder" train --data "$repo/assets/sample" --epochs 1 --image-size 32 --no-augment \
  --out "$out/model" >/dev/null 2>&1
# The first photo of each species.
for species in "$repo"/assets/sample/*/; do
  photos=("$species"*.jpg)
  cp "${photos[0]}" "$out/photos/"
done
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$out/photos" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
until python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" 2>/dev/null; do
  sleep 0.2
done
python3 - "$out" "$n" "$port" <<'EOF'
import os, sys, zipfile
out, n, port = sys.argv[1], int(sys.argv[2]), sys.argv[3]
photos = sorted(os.listdir(os.path.join(out, "photos")))
names = ["Gonepteryx rhamni (Linnaeus, 1758)", "Citroenvlinder", "Anthocharis cardamines", "Celastrina argiolus"]
dwca = os.path.join(out, "dwca")
with open(os.path.join(dwca, "occurrence.txt"), "w") as core, \
        open(os.path.join(dwca, "multimedia.txt"), "w") as media, \
        open(os.path.join(out, "records.csv"), "w") as csv:
    core.write("gbifID\toccurrenceID\tscientificName\teventDate\n")
    media.write("gbifID\ttype\tformat\tidentifier\n")
    csv.write("id,photo,species,date\n")
    for i in range(n):
        urls = [f"http://127.0.0.1:{port}/{photos[(i + k) % len(photos)]}?record={i}" for k in range(i % 2 + (i % 4 == 3) + 1)]
        name = names[i % len(names)]
        date = f"2021-05-{i % 28 + 1:02d}"
        core.write(f"{i}\tobs:{i}\t{name}\t{date}\n")
        for url in urls:
            media.write(f"{i}\tStillImage\timage/jpeg\t{url}\n")
        csv.write(f"obs:{i},{'|'.join(urls)},\"{name}\",{date}\n")
with open(os.path.join(dwca, "meta.xml"), "w") as meta:
    meta.write("""<archive xmlns="http://rs.tdwg.org/dwc/text/">
  <core encoding="UTF-8" fieldsTerminatedBy="\\t" linesTerminatedBy="\\n" fieldsEnclosedBy="" ignoreHeaderLines="1" rowType="http://rs.tdwg.org/dwc/terms/Occurrence">
    <files><location>occurrence.txt</location></files>
    <id index="0"/>
    <field index="1" term="http://rs.tdwg.org/dwc/terms/occurrenceID"/>
    <field index="2" term="http://rs.tdwg.org/dwc/terms/scientificName"/>
    <field index="3" term="http://rs.tdwg.org/dwc/terms/eventDate"/>
  </core>
  <extension encoding="UTF-8" fieldsTerminatedBy="\\t" linesTerminatedBy="\\n" fieldsEnclosedBy="" ignoreHeaderLines="1" rowType="http://rs.gbif.org/terms/1.0/Multimedia">
    <files><location>multimedia.txt</location></files>
    <coreid index="0"/>
    <field index="1" term="http://purl.org/dc/terms/type"/>
    <field index="2" term="http://purl.org/dc/terms/format"/>
    <field index="3" term="http://purl.org/dc/terms/identifier"/>
  </extension>
</archive>
""")
with zipfile.ZipFile(os.path.join(out, "dwca.zip"), "w", zipfile.ZIP_DEFLATED) as z:
    for f in ("meta.xml", "occurrence.txt", "multimedia.txt"):
        z.write(os.path.join(dwca, f), f)
EOF
for input in dwca.zip records.csv; do
  rm -f "$out/queue-$input.db"
  /usr/bin/time -v "$vlinder" queue import --model "$out/model" --database "$out/queue-$input.db" \
    --allow-private-urls --date-column date "$out/$input" >"$out/import-$input.log" 2>"$out/time-$input.txt" || true
  printf '%s: %s, %s, exit %s\n' "$input" \
    "$(grep 'Maximum resident' "$out/time-$input.txt" | awk '{printf "peak %.0f MB", $6 / 1024}')" \
    "$(grep 'Elapsed (wall' "$out/time-$input.txt" | awk '{print $8 " wall"}')" \
    "$(grep 'Exit status' "$out/time-$input.txt" | awk '{print $3}')"
done
