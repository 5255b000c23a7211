"""The docs still say what the code does: every command of a `sh` block in README.md,
CONTRIBUTING.md, bench/README.md and docs/ runs, or is checked as far as it can be offline
(`make -n TARGET`, `kubectl kustomize DIR`, `kfault validate`, each option against the
command's own parser), every YAML block of our kinds validates as `kfault validate` checks it,
every `make TARGET` named in the text exists, and every link between the docs resolves, anchors
included. A command this test doesn't know fails it: teach it the command, or leave it out."""
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml

from kfault_agent import cli
from kfault_api import schema, spec

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
PAGES = sorted(["README.md", "CONTRIBUTING.md", os.path.join("bench", "README.md")]
               + [os.path.relpath(p, ROOT)
                  for p in glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)])
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# Commands shown for another machine (a cluster, a registry); only their repository paths are checked.
ELSEWHERE = {"podman", "minikube", "kind"}
# kubectl verbs that need a cluster; their kfault resource names are checked against KINDS.
KUBECTL_CLUSTER_VERBS = {"get", "describe", "delete", "annotate", "logs", "rollout", "patch", "exec"}
CORE_RESOURCES = {"pods", "pod", "namespace", "ns", "ds", "deploy"}


def read(page):
    with open(os.path.join(ROOT, page), encoding="utf-8") as handle:
        return handle.read()


def blocks(language):
    return [(page, body) for page in PAGES for lang, body in FENCE.findall(read(page)) if lang == language]


def commands():
    """(page, argv) of each command of every sh block: comments dropped, `a && b` split."""
    found = []
    for page, body in blocks("sh"):
        for line in body.splitlines():
            argv = []
            for token in shlex.split(line, comments=True) + ["&&"]:
                if token == "&&":
                    if argv:
                        found.append((page, argv))
                    argv = []
                else:
                    argv.append(token)
    return found


def phony_targets():
    return set(re.search(r"^\.PHONY:(.*)$", read("Makefile"), re.M).group(1).split())


def kfault_resource_names():
    names = {"chaos"}
    for kind in spec.KINDS.values():
        names |= {kind.plural, kind.name.lower(), kind.short_name}
    return names


def check_repo_paths(argv):
    """Arguments that name a file of this repository must exist."""
    for arg in argv:
        if re.match(r"^(examples|manifests|scripts|bench|tests|docs|api|agent|controller|lab|bpf)/", arg):
            assert os.path.exists(os.path.join(ROOT, arg)), f"no such file: {arg}"


def check_options(argv, help_text):
    for arg in argv:
        if arg.startswith("--"):
            assert arg.split("=")[0] in help_text, f"{argv[0]} has no option {arg}"


def check_kfault_file(path, for_node):
    """What `kfault validate` (for_node False) or `kfault run` (True) accepts of a file."""
    for experiment in (spec.parse_experiment(doc, for_node) for doc in spec.load_documents(os.path.join(ROOT, path))):
        assert experiment.key


def check_kfault(argv):
    args = cli.build_parser().parse_args(argv[1:])     # argparse exits on an unknown option
    if args.command in ("validate", "run"):
        check_kfault_file(args.file, for_node=args.command == "run")


def check_make(argv):
    targets = [a for a in argv[1:] if not a.startswith("-") and "=" not in a]
    for target in targets:
        assert target in phony_targets(), f"make {target}: no such target"
        out = subprocess.run(["make", "-n", "--no-print-directory", "-C", ROOT, target], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr


def kustomize(folder):
    if not shutil.which("kubectl"):
        pytest.skip("needs kubectl (its built-in kustomize renders offline)")
    out = subprocess.run(["kubectl", "kustomize", os.path.join(ROOT, folder)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, f"kubectl kustomize {folder}: {out.stderr}"


def check_kubectl(argv):
    verb = argv[1] if argv[1] != "-n" else argv[3]
    if "-k" in argv:
        kustomize(argv[argv.index("-k") + 1])
    elif verb == "kustomize":
        kustomize(argv[2])
    elif verb == "apply" and "-f" in argv:
        path = argv[argv.index("-f") + 1]
        docs = list(yaml.safe_load_all(read(path)))
        if any(d and d.get("apiVersion") == spec.API_VERSION for d in docs):
            check_kfault_file(path, for_node=False)
    elif verb in KUBECTL_CLUSTER_VERBS:
        rest = argv[argv.index(verb) + 1:]
        if verb in ("get", "delete", "describe") and rest and not rest[0].startswith("-"):
            for resource in rest[0].split(","):
                resource = resource.split("/")[0]
                assert resource in kfault_resource_names() | CORE_RESOURCES, f"kubectl {verb}: unknown {resource}"
    else:
        raise AssertionError(f"kubectl {verb}: this test doesn't know it")


def check_script(argv, path):
    with open(path, "rb") as handle:
        first = handle.readline()
    if first.startswith(b"#!") and b"bash" in first:
        assert subprocess.run(["bash", "-n", path], timeout=30).returncode == 0
    assert os.access(path, os.X_OK), f"{argv[0]} is not executable"


def check_command(argv):
    check_repo_paths(argv)
    name = argv[0]
    if name in (".venv/bin/kfault", "kfault"):
        check_kfault(argv)
    elif name in (".venv/bin/kfault-controller", "kfault-controller"):
        out = subprocess.run([os.path.join(VENV_BIN, "kfault-controller"), "--help"], capture_output=True, text=True,
                             timeout=60)
        check_options(argv, out.stdout)
    elif name == "make":
        check_make(argv)
    elif name == "kubectl":
        check_kubectl(argv)
    elif name in ("python", "python3") and argv[1].endswith(".py"):
        out = subprocess.run([sys.executable, os.path.join(ROOT, argv[1]), "--help"], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        check_options(argv[1:], out.stdout)
    elif "/" in name and os.path.exists(os.path.join(ROOT, name)):
        check_script(argv, os.path.join(ROOT, name))
    elif name not in ELSEWHERE:
        raise AssertionError(f"{' '.join(argv)}: this test doesn't know {name}")


@pytest.mark.parametrize("page,argv", commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_every_command_in_the_docs_runs_or_validates(page, argv):
    check_command(argv)


def kfault_documents():
    return [(page, doc) for page, body in blocks("yaml") for doc in yaml.safe_load_all(body)
            if doc and doc.get("apiVersion") == spec.API_VERSION]


@pytest.mark.parametrize("page,doc", kfault_documents(),
                         ids=lambda v: v["metadata"]["name"] if isinstance(v, dict) else v)
def test_every_yaml_block_of_our_kinds_validates(page, doc):
    """As `kfault validate` and the API server check it: the kind's schema, then the parser."""
    kind = spec.KINDS[doc["kind"]]
    assert schema.validate_against_schema(doc.get("spec"), kind.schema, "spec") == []
    spec.parse_experiment(doc, for_node=False)


def test_every_kind_has_a_reference_page_with_an_example():
    pages = {page for page, doc in kfault_documents() if page.startswith(os.path.join("docs", "kinds"))
             and os.path.basename(page) == f"{doc['kind'].lower()}.md"}
    assert pages == {os.path.join("docs", "kinds", f"{kind.lower()}.md") for kind in spec.KINDS}


@pytest.mark.parametrize("page", PAGES)
def test_every_make_target_named_exists(page):
    named = set(re.findall(r"`make ([a-z][a-z-]*)", read(page)))
    assert named - phony_targets() == set()


def slug(heading):
    """GitHub's anchor of a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page):
    text = FENCE.sub("", read(page))
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("page", PAGES)
def test_links_between_the_docs_resolve(page):
    broken = []
    for target in LINK.findall(FENCE.sub("", read(page))):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not os.path.exists(os.path.join(ROOT, resolved)):
            broken.append(f"{target}: no such file")
        elif anchor and (not resolved.endswith(".md") or anchor not in anchors(resolved)):
            broken.append(f"{target}: no such heading")
    assert broken == []


def test_the_readme_is_short_and_opens_with_the_two_commands():
    text = read("README.md")
    assert len(text.encode()) <= 8 * 1024
    first = FENCE.search(text)
    assert [line.split("#")[0].strip() for line in first.group(2).splitlines()] == ["make demo", "make test"]
