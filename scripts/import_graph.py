#!/usr/bin/env python3
"""The import graph of src/: which module imports which, its layers and cycles.

Nodes are the top-level modules of the crate (a file `src/x.rs` or a folder
`src/x/`); an edge is a `use crate::x...` / `crate::x::` path (or `super::` from a
submodule) in a file of another module. The layer order is read from the
`LAYERS` list below, which mirrors the layer table at the top of src/lib.rs: an
edge from a module to one on a *higher* layer is an import pointing back up.
Cycles are counted between files (the strongly connected components of the
file graph, `mod.rs` standing for its folder's items).

Usage: scripts/import_graph.py [--verbose]
Prints the counts and, with --verbose, every upward edge and cycle.
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

# Lowest first. Modules on one line share a layer (they may import each other
# only if no cycle results).
LAYERS = [
    ["error", "fault", "process", "malloc", "logging", "device", "cuda", "hub", "metrics", "worker"],
    ["policy", "optim"],
    ["rlsd"],
    ["model"],
    ["data"],
    ["verify", "env"],
    ["checkpoint"],
    ["stats"],
    ["config"],
    ["plot", "progress"],
    ["plan", "memory", "pretrain"],
    ["train"],
    ["pipeline"],
    ["observe"],
    ["run"],
    ["actors", "distributed"],
    ["commands"],
    ["main"],
]


def layer_of(module):
    for i, names in enumerate(LAYERS):
        if module in names:
            return i
    return None


def file_module_path(rel):
    """'actors/sampler.rs' -> ['actors', 'sampler']; 'model/mod.rs' -> ['model']."""
    parts = rel[:-3].split("/")
    if parts[-1] == "mod":
        parts = parts[:-1]
    if parts == ["lib"]:
        return []
    return parts


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//")[0] if not line.lstrip().startswith("//") else "" for line in text.splitlines())


def expand_use(tree):
    """'a::{b, c::{d, e}}' -> ['a::b', 'a::c::d', 'a::c::e']"""
    tree = tree.strip()
    depth = 0
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                prefix = tree[:i]
                inner = tree[i + 1 : tree.rindex("}")]
                out = []
                for part in split_top(inner):
                    for tail in expand_use(part):
                        out.append(prefix + tail)
                return out
            depth += 1
    return [tree]


def split_top(s):
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def resolve(path, here, files):
    """A `crate::`/`super::`/`self::` path -> the file-level node it names."""
    segs = [s.strip() for s in path.split("::") if s.strip()]
    segs = [s.split(" as ")[0].strip() for s in segs]
    if not segs:
        return None
    if segs[0] == "crate":
        base, rest = [], segs[1:]
    elif segs[0] in ("super", "self"):
        base = list(here)
        rest = segs
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                base = base[:-1]
            rest = rest[1:]
        # `here` for a non-mod file is its own module; super of it is its folder
    else:
        return None
    mod = base + rest
    # longest prefix that is a file node
    for n in range(len(mod), 0, -1):
        key = "/".join(mod[:n])
        if key in files:
            return key
    return None


def build():
    files = {}
    for root, _, names in os.walk(SRC):
        for name in names:
            if name.endswith(".rs"):
                full = os.path.join(root, name)
                rel = os.path.relpath(full, SRC).replace(os.sep, "/")
                if rel.startswith("bin/"):
                    continue
                files["/".join(file_module_path(rel)) or "lib"] = full
    edges = set()
    for node, full in files.items():
        here = node.split("/") if node != "lib" else []
        text = strip_comments(open(full, encoding="utf-8").read())
        # unit tests (`#[cfg(test)] mod tests`) are not part of the layering
        text = text.split("#[cfg(test)]")[0]
        paths = []
        for m in re.finditer(r"\buse\s+((?:crate|super|self)::[^;]*);", text):
            paths.extend(expand_use(m.group(1)))
        for m in re.finditer(r"\b((?:crate|super)(?:::[A-Za-z_][A-Za-z0-9_]*)+)", text):
            paths.append(m.group(1))
        for p in paths:
            tgt = resolve(p, here if not full.endswith("mod.rs") else here, files)
            # inside a non-mod file, `super::` means the parent folder
            if tgt and tgt != node and tgt != "lib":
                edges.add((node, tgt))
    return files, edges


def top(node):
    return "main" if node == "main" else node.split("/")[0]


def sccs(nodes, edges):
    adj = {n: [] for n in nodes}
    for a, b in edges:
        adj[a].append(b)
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in adj[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for n in nodes:
        if n not in index:
            visit(n)
    return out


def main():
    verbose = "--verbose" in sys.argv
    files, edges = build()
    # ignore edges from a folder's mod.rs to its own children (re-exports)
    file_edges = {(a, b) for a, b in edges if not b.startswith(a + "/")}
    up = []
    unknown = set()
    for a, b in sorted(file_edges):
        ta, tb = top(a), top(b)
        if ta == tb:
            continue
        la, lb = layer_of(ta), layer_of(tb)
        if la is None:
            unknown.add(ta)
            continue
        if lb is None:
            unknown.add(tb)
            continue
        if lb > la:
            up.append((a, b))
    cycles = sccs(sorted(files), file_edges)
    module_edges = {(top(a), top(b)) for a, b in file_edges if top(a) != top(b)}
    print(f"modules: {len({top(n) for n in files if n != 'lib'})}  files: {len(files)}  "
          f"module edges: {len(module_edges)}  file edges: {len(file_edges)}")
    print(f"imports pointing back up: {len(up)}")
    print(f"cycles: {len(cycles)}")
    mod_cycles = sccs(sorted({top(n) for n in files}), module_edges)
    print(f"cycles between top-level modules: {len(mod_cycles)}")
    if unknown:
        print(f"modules missing from LAYERS: {sorted(unknown)}")
    if verbose:
        for a, b in up:
            print(f"  up: {a} -> {b}")
        for c in cycles:
            print(f"  cycle: {' <-> '.join(c)}")
        for c in mod_cycles:
            print(f"  module cycle: {' <-> '.join(c)}")


if __name__ == "__main__":
    main()
