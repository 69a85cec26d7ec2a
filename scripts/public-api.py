#!/usr/bin/env python3
"""Lists the crate's public API from rustdoc's JSON output: one line per public item (kind and path), sorted.

Usage: scripts/public-api.py target/doc/scopegate.json > public-api.txt
Enum variants are listed under their enum and not counted; the last line is the count of the rest.
"""
import json
import sys

doc = json.load(open(sys.argv[1]))
lines = []
for item in doc["paths"].values():
    if item["crate_id"] != 0:
        continue
    path = "::".join(item["path"])
    lines.append(f"{item['kind']} {path}")
lines.sort()
items = [l for l in lines if not l.startswith("variant ")]
for line in lines:
    print(line)
print(f"# {len(items)} public items (besides {len(lines) - len(items)} enum variants)")
