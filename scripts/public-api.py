#!/usr/bin/env python3
"""Lists the crate's public API from rustdoc's JSON output: one line per public item, as a user names it (the path
through public modules and re-exports, not where the item is defined), sorted.

Usage: scripts/public-api.py target/doc/scopegate.json > public-api.txt
Enum variants are listed under their enum and not counted; the last line is the count of the rest.
"""
import json
import sys

doc = json.load(open(sys.argv[1]))
index = doc["index"]
lines = set()


def kind_of(item):
    return next(iter(item["inner"]))


def walk(module_id, prefix, seen):
    if module_id in seen:
        return
    seen.add(module_id)
    for child_id in index[str(module_id)]["inner"]["module"]["items"]:
        child = index.get(str(child_id))
        if child is None or child.get("visibility") != "public":
            continue
        kind = kind_of(child)
        name = child.get("name")
        if kind == "use":
            use = child["inner"]["use"]
            target = index.get(str(use["id"])) if use.get("id") is not None else None
            if target is None:
                continue  # a re-export of another crate's item
            if use.get("is_glob"):
                if kind_of(target) == "module":
                    walk(use["id"], prefix, seen)
                continue
            child, child_id, name, kind = target, use["id"], use["name"], kind_of(target)
        path = f"{prefix}::{name}"
        lines.add(f"{kind} {path}")
        if kind == "module":
            walk(child_id, path, seen)
        elif kind == "enum":
            for variant_id in child["inner"]["enum"]["variants"]:
                lines.add(f"variant {path}::{index[str(variant_id)]['name']}")


walk(doc["root"], index[str(doc["root"])]["name"], set())
ordered = sorted(lines)
items = [line for line in ordered if not line.startswith("variant ")]
for line in ordered:
    print(line)
print(f"# {len(items)} public items (besides {len(ordered) - len(items)} enum variants)")
