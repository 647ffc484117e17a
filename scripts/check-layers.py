#!/usr/bin/env python3
"""The project's shape gates, run by scripts/test.sh beside rustfmt and clippy.

1. No import cycle between the files of any crate's library. An edge is a
   reference in code (comments and strings do not count) to `crate::a::b`,
   `super::x` or a `mod x;` declaration, resolved to the file that defines the
   deepest module named; a module's own `tests` file (or inline `mod tests`)
   is exempt, as it exists to reach into its parent.
2. No Rust source file of at least MAX_LINES lines (the house style: a file
   one person can hold in their head).

Exit status 1 with every cycle and long file named; 0 otherwise.
"""

import os
import re
import sys

MAX_LINES = 800
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def strip_comments_and_strings(src):
    """Code only: comments and string/char literal contents become spaces."""
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
            continue
        if src.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if src.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif src.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            continue
        m = re.match(r'b?r(#*)"', src[i:i + 260])
        if m and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            end = '"' + m.group(1)
            j = src.find(end, i + m.end())
            i = n if j < 0 else j + len(end)
            out.append('""')
            continue
        if c == '"':
            i += 1
            while i < n and src[i] != '"':
                i += 2 if src[i] == "\\" else 1
            i += 1
            out.append('""')
            continue
        if c == "'":
            # A char literal ('a', '\n', '\u{..}'), not a lifetime ('a).
            m = re.match(r"'(\\.[^']*|[^\\'])'", src[i:i + 12])
            if m:
                out.append("' '")
                i += m.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)


def drop_test_modules(code):
    """Removes inline `mod tests { ... }` blocks."""
    while True:
        m = re.search(r"\bmod\s+tests\s*\{", code)
        if not m:
            return code
        depth, i = 1, m.end()
        while i < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[i], 0)
            i += 1
        code = code[: m.start()] + code[i:]


def use_paths(code):
    """Every `crate::`/`super::`/`self::` path in code, use-trees expanded."""
    paths = []
    for m in re.finditer(r"\b(crate|super|self)((?:\s*::\s*(?:[A-Za-z_]\w*|\{))+)", code):
        head, rest = m.group(1), m.group(2)
        segs = [s.strip() for s in rest.split("::") if s.strip()]
        if segs and segs[-1] == "{":
            # A use tree: take each first segment of its top-level items.
            depth, i = 1, m.end()
            items, cur = [], []
            while i < len(code) and depth:
                ch = code[i]
                if ch == "{":
                    depth += 1
                elif ch == "}":
                    depth -= 1
                if depth == 1 and ch == ",":
                    items.append("".join(cur))
                    cur = []
                elif depth >= 1:
                    cur.append(ch)
                i += 1
            items.append("".join(cur))
            for item in items:
                first = re.split(r"::|\s|\{", item.strip())
                if first and first[0] and first[0] not in ("self", "*"):
                    paths.append((head, segs[:-1] + [first[0]]))
                else:
                    paths.append((head, segs[:-1]))
        else:
            paths.append((head, segs))
    return paths


def crate_files(src_dir):
    """Module path (tuple) -> file, for a library rooted at src/lib.rs."""
    files = {}
    for dirpath, _, names in os.walk(src_dir):
        for name in names:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, src_dir)[:-3].split(os.sep)
            if rel[0] in ("main", "bin"):
                continue
            if rel == ["lib"]:
                mod = ()
            elif rel[-1] == "mod":
                mod = tuple(rel[:-1])
            else:
                mod = tuple(rel)
            files[mod] = path
    return files


def resolve(files, segs):
    for k in range(len(segs), -1, -1):
        if tuple(segs[:k]) in files:
            return tuple(segs[:k])
    return None


def cycles_of(src_dir):
    files = crate_files(src_dir)
    graph = {mod: set() for mod in files}
    for mod, path in files.items():
        if mod and mod[-1] == "tests":
            continue
        with open(path, encoding="utf-8") as f:
            code = drop_test_modules(strip_comments_and_strings(f.read()))
        is_dir_module = path.endswith(("mod.rs", "lib.rs"))
        here = mod if is_dir_module else mod[:-1]
        for m in re.finditer(r"\bmod\s+(\w+)\s*;", code):
            if m.group(1) != "tests":
                graph[mod].add(here + (m.group(1),))
        for head, segs in use_paths(code):
            if head == "crate":
                base = ()
            elif head == "self":
                base = mod
            else:
                base = mod[:-1]
                while segs and segs[0] == "super":
                    base, segs = base[:-1], segs[1:]
            target = resolve(files, list(base) + segs)
            if target is not None and target != mod:
                graph[mod].add(target)
    # Tarjan's strongly connected components.
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                sccs.append(scc)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return [sorted(files[m] for m in scc) for scc in sccs]


def main():
    failed = False
    crates = os.path.join(ROOT, "crates")
    for name in sorted(os.listdir(crates)):
        src = os.path.join(crates, name, "src")
        if not os.path.isfile(os.path.join(src, "lib.rs")):
            continue
        for scc in cycles_of(src):
            failed = True
            rel = [os.path.relpath(p, ROOT) for p in scc]
            print(f"import cycle in crates/{name}: {' <-> '.join(rel)}")
    for top in ("crates", "guests", "benches"):
        for dirpath, dirs, names in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [d for d in dirs if d not in ("target", "vendor", "node_modules")]
            for name in names:
                if name.endswith(".rs"):
                    path = os.path.join(dirpath, name)
                    with open(path, encoding="utf-8") as f:
                        lines = sum(1 for _ in f)
                    if lines >= MAX_LINES:
                        failed = True
                        print(f"{os.path.relpath(path, ROOT)}: {lines} lines (the limit is {MAX_LINES})")
    if failed:
        sys.exit(1)
    print("layers: no import cycle, no file over the line limit")


if __name__ == "__main__":
    main()
