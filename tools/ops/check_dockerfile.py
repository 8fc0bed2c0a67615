#!/usr/bin/env python3
"""Static checks of the repository's Dockerfile, for machines where no Docker daemon can build it
(hadolint is not available either). Parses the instructions (line continuations, comments,
stages) and asserts what the image promises: a Rust builder stage built as shared/notes/build.md
says, a small non-root runtime stage with the `settle` binary, a HEALTHCHECK, exec-form
ENTRYPOINT, EXPOSEd ports equal to the Helm chart's defaults, and a .dockerignore that keeps build
output and VCS data out of the context.

usage: check_dockerfile.py [REPO_ROOT]      exits 1 with one line per failed check
"""
import pathlib
import re
import shlex
import sys


def instructions(text):
    """(keyword, argument text) per instruction; continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        keyword, _, rest = buf.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        buf = ""
    if buf:
        raise ValueError("the Dockerfile ends inside a continued instruction")
    return out


def stages(instrs):
    """[(name, base, [instructions])] in order; instructions before the first FROM go to None."""
    result = []
    for kw, arg in instrs:
        if kw == "FROM":
            words = [w for w in arg.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            result.append((name, words[0], []))
        elif result:
            result[-1][2].append((kw, arg))
    return result


def chart_ports(root):
    values = (root / "helm/settle/values.yaml").read_text()
    block = re.search(r"^ports:\n((?:[ #].*\n|\n)+)", values, re.M)
    if not block:
        return {}
    return {k: int(v) for k, v in re.findall(r"^  (\w+): (\d+)", block.group(1), re.M)}


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)

    text = (root / "Dockerfile").read_text()
    st = stages(instructions(text))
    check(len(st) >= 2, "multi-stage: a builder and a runtime stage")
    if len(st) < 2:
        print("\n".join(f"check_dockerfile: {f}" for f in failures), file=sys.stderr)
        return 1
    builder_names = {name for name, _, _ in st[:-1] if name}
    _, builder_base, builder = st[0]
    _, runtime_base, runtime = st[-1]
    brun = " ".join(a for k, a in builder if k == "RUN")
    check(builder_base.startswith("rust:"), f"builder stage from a rust image (got {builder_base})")
    check("libclang-dev" in brun, "builder installs libclang-dev (RocksDB bindgen)")
    check(re.search(r"cargo build\b[^&]*--release", brun) is not None, "builder builds in release")
    check("--locked" in brun, "builder builds with --locked (the committed Cargo.lock)")
    check("-p settle-node" in brun and "--bin settle" in brun, "builder builds the settle binary")
    node_toml = (root / "node/Cargo.toml").read_text()
    check('name = "settle-node"' in node_toml and 'name = "settle"' in node_toml,
          "the workspace still has the settle-node package and its settle binary")
    check("--mount=type=cache" in brun, "builder keeps the cargo cache between builds")
    check("profile" not in brun.lower() and "RUSTFLAGS" not in text,
          "builder uses the workspace's profiles (no overrides: they rebuild RocksDB)")

    check(not runtime_base.startswith("rust:"), "runtime is not the Rust toolchain image")
    check("slim" in runtime_base or "distroless" in runtime_base, f"small runtime base (got {runtime_base})")
    rt = {}
    for k, a in runtime:
        rt.setdefault(k, []).append(a)
    copies = rt.get("COPY", [])
    check(any(re.match(rf"--from=({'|'.join(builder_names)})\b", c) and "/usr/local/bin/settle" in c
              for c in copies) if builder_names else False,
          "runtime copies the settle binary from the builder stage")
    users = rt.get("USER", [])
    last_user = users[-1].split(":")[0] if users else "root"
    check(last_user not in ("root", "0"), f"runtime runs as a non-root USER (got {last_user})")
    user_pos = max((i for i, (k, _) in enumerate(runtime) if k == "USER"), default=-1)
    check(all(k != "RUN" for k, _ in runtime[user_pos + 1:]) or user_pos == -1,
          "no RUN after USER (root-only steps happen before dropping privileges)")
    check(len(rt.get("HEALTHCHECK", [])) == 1 and "CMD" in rt.get("HEALTHCHECK", [""])[0],
          "exactly one HEALTHCHECK with a command")
    check("/healthz" in " ".join(rt.get("HEALTHCHECK", [])), "HEALTHCHECK probes /healthz")
    ep = rt.get("ENTRYPOINT", [""])[-1]
    check(ep.startswith("["), "exec-form ENTRYPOINT (signals reach the process)")
    check("tini" in ep or "settle" in ep, "ENTRYPOINT runs tini or settle")
    check(rt.get("STOPSIGNAL", ["SIGTERM"])[-1] in ("SIGTERM", "15"), "stops with SIGTERM (graceful shutdown)")
    apt_runs = [a for a in rt.get("RUN", []) if "apt-get install" in a]
    check(all("--no-install-recommends" in a and "rm -rf /var/lib/apt/lists" in a for a in apt_runs),
          "runtime apt installs without recommends and cleans the lists")

    exposed = set()
    for e in rt.get("EXPOSE", []):
        for w in shlex.split(e):
            port, _, proto = w.partition("/")
            exposed.add((int(port), proto or "tcp"))
    ports = chart_ports(root)
    check(set(ports) == {"quic", "peer", "http"}, f"chart ports quic, peer, http in values.yaml (got {ports})")
    want = {(ports.get("quic"), "udp"), (ports.get("peer"), "udp"), (ports.get("http"), "tcp")}
    check(exposed == want, f"EXPOSE {sorted(exposed)} equals the chart's ports {sorted(want)}")

    ignore = root / ".dockerignore"
    entries = set(ignore.read_text().split()) if ignore.exists() else set()
    for must in (".git", "target"):
        check(must in entries, f".dockerignore excludes {must}")

    for f in failures:
        print(f"check_dockerfile: {f}", file=sys.stderr)
    if not failures:
        print(f"check_dockerfile: {len(st)} stages, runtime user {last_user}, ports {sorted(exposed)}: ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
