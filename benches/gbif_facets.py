"""A stand-in for GBIF's occurrence search that answers from an observations CSV, for measuring
`vlinder prior gbif` offline: species/match gives each species a key, occurrence/search counts
the CSV's rows (limit=0) with the month facet or a decimalLatitude range, as GBIF's JSON does.

    python3 benches/gbif_facets.py ../shared/data/inat_uk_3species_csellwood.observations.csv 8765
    vlinder prior gbif --country GB --base-url http://127.0.0.1:8765 \
        "Anthocharis cardamines" "Celastrina argiolus" "Gonepteryx rhamni" --out prior.json
"""
import csv
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

rows = list(csv.DictReader(open(sys.argv[1])))
names = sorted({r["species"] for r in rows})
keys = {n.replace("_", " ").capitalize(): 1000 + i for i, n in enumerate(names)}
by_key = {1000 + i: n for i, n in enumerate(names)}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        q = parse_qs(url.query)
        if url.path.endswith("/species/match"):
            name = q["name"][0]
            body = {"usageKey": keys[name], "matchType": "EXACT"} if name in keys else {"matchType": "NONE"}
        else:
            species = by_key[int(q["taxonKey"][0])]
            found = [r for r in rows if r["species"] == species]
            if "decimalLatitude" in q:
                south, north = map(float, q["decimalLatitude"][0].split(","))
                found = [r for r in found if r["latitude"] not in ("", "NA") and south <= float(r["latitude"]) <= north]
            body = {"offset": 0, "limit": 0, "endOfRecords": False, "count": len(found), "results": []}
            if q.get("facet") == ["month"]:
                months = {}
                for r in found:
                    m = str(int(r["observed_on"][5:7]))
                    months[m] = months.get(m, 0) + 1
                counts = sorted(({"name": m, "count": c} for m, c in months.items()), key=lambda c: -c["count"])
                body["facets"] = [{"field": "MONTH", "counts": counts}]
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Handler).serve_forever()
