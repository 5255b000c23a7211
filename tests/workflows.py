"""Chaos Mesh's Workflow documents (tests/chaos_mesh/workflow.yaml) as the tests use them: three
include a StressChaos, which kfault runs once StressChaos is a kind of spec.EXPERIMENTS. Until then
`unregistered_kinds` names it (those documents are expected to be refused naming it), and
`runnable` drops its templates so the rest of each document runs. `http_server`: what a
StatusCheck requests."""
import contextlib
import copy
import http.server
import os
import threading

from kfault_api import spec

CHAOS_MESH_WORKFLOWS = os.path.join(os.path.dirname(__file__), "chaos_mesh", "workflow.yaml")


def chaos_mesh_workflows():
    """Chaos Mesh's four examples by name: try-workflow-serial, -parallel, -status-check, -custom-task."""
    return {doc["metadata"]["name"]: doc for doc in spec.load_documents(CHAOS_MESH_WORKFLOWS)}


def unregistered_kinds(doc):
    """The experiment kinds a Workflow's templates name that kfault does not have (yet)."""
    if doc.get("kind") != "Workflow":
        return set()
    return {t["templateType"] for t in doc["spec"]["templates"]
            if t["templateType"].endswith("Chaos") and t["templateType"] not in spec.EXPERIMENTS}


def runnable(doc):
    """The document without templates of unregistered kinds (nor references to them)."""
    missing = unregistered_kinds(doc)
    doc = copy.deepcopy(doc)
    dropped = {t["name"] for t in doc["spec"]["templates"] if t["templateType"] in missing}
    doc["spec"]["templates"] = [t for t in doc["spec"]["templates"] if t["name"] not in dropped]
    for template in doc["spec"]["templates"]:
        if "children" in template:
            template["children"] = [c for c in template["children"] if c not in dropped]
        if "conditionalBranches" in template:
            template["conditionalBranches"] = [b for b in template["conditionalBranches"]
                                               if b["target"] not in dropped]
    return doc


@contextlib.contextmanager
def http_server(status_code=200):
    """A real HTTP server on 127.0.0.1 answering every GET with `status_code` (changeable:
    server.code); server.requests counts what it was asked."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.server.requests += 1
            self.send_response(self.server.code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.code, server.requests = status_code, 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
