#!/usr/bin/env python3
"""The chart's values are documented in two places that must not drift: a comment above every
value in values.yaml, and the values table in helm/settle/README.md.

usage: values_doc.py check    every leaf value has a comment and a README table row
       values_doc.py table    prints the table (paste it into the README)
"""
import pathlib
import re
import sys

import yaml

CHART = pathlib.Path(__file__).resolve().parent.parent / "settle"


def documented_leaves(text):
    """(dotted path, doc) for every documented value, helm-docs style: a value's doc is the
    `# -- ` comment right above it (continued by the comment lines that follow); a documented
    key with a block value covers its children; other comments are section headings. Keys with a
    scalar value and no doc come out with an empty doc."""
    leaves, stack, doc = [], [], None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            doc = None
            continue
        if stripped.startswith("#"):
            body = stripped.lstrip("#").strip()
            if body.startswith("-- "):
                doc = [body[3:]]
            elif doc is not None:
                doc.append(body)
            continue
        m = re.match(r"^( *)([A-Za-z][\w-]*):(.*)$", line)
        if not m:
            continue  # list items and continuation lines of a block value
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3).strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if any(covered for _, _, covered in stack):
            doc = None
            continue
        path = ".".join([k for _, k, _ in stack] + [key])
        if doc is not None:
            leaves.append((path, " ".join(doc).strip()))
            stack.append((indent, key, True))
        elif rest == "":
            stack.append((indent, key, False))
        else:
            leaves.append((path, ""))
        doc = None
    return leaves


def default_of(values, path):
    node = values
    for part in path.split("."):
        node = node[part]
    if isinstance(node, (dict, list)):
        return "see values.yaml" if node else ("`{}`" if isinstance(node, dict) else "`[]`")
    if node is None:
        return "`null`"
    if isinstance(node, bool):
        return f"`{str(node).lower()}`"
    return f"`{node}`" if node != "" else '`""`'


def table():
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    rows = ["| value | default | meaning |", "|---|---|---|"]
    for path, comment in documented_leaves(text):
        rows.append(f"| `{path}` | {default_of(values, path)} | {comment.replace('|', '/')} |")
    return "\n".join(rows)


def check():
    text = (CHART / "values.yaml").read_text()
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load(text)
    leaves = documented_leaves(text)
    failures = [f"values.yaml: {p} has no `# --` comment" for p, c in leaves if not c]
    failures += [f"README.md: no table row for {p}" for p, _ in leaves if f"| `{p}` |" not in readme]

    known = {p for p, _ in leaves}

    def walk(node, prefix):
        for k, v in node.items():
            p = f"{prefix}{k}"
            if isinstance(v, dict) and v and p not in known:
                yield from walk(v, p + ".")
            else:
                yield p

    failures += [f"values.yaml: {p} is not documented" for p in walk(values, "") if p not in known]
    for f in failures:
        print(f"values_doc: {f}", file=sys.stderr)
    if not failures:
        print(f"values_doc: {len(leaves)} values documented in values.yaml and README.md")
    return 1 if failures else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["table"]:
        print(table())
        sys.exit(0)
    sys.exit(check())
