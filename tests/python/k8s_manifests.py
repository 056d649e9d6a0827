"""Checks the Kubernetes manifests offline (issue 14): every document
validates, strictly (no unknown fields), against the schemas of the oldest
and the newest Kubernetes we document (kubernetes-validate carries them);
a copy with one unknown field must fail (so the check can fail); and the
StatefulSet's WARREN_JOIN names every replica, the seed (pod 0) first
(ADR 0022).

    k8s_manifests.py MANIFEST...
Prints "manifests: ok" on success.
"""

import copy
import sys

import kubernetes_validate
import yaml

VERSIONS = ["1.28.0", "1.37.0"]


def fail(message):
    print("FAIL: " + message, file=sys.stderr, flush=True)
    sys.exit(1)


def check_join_list(statefulset):
    replicas = statefulset["spec"]["replicas"]
    name = statefulset["metadata"]["name"]
    containers = statefulset["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for c in containers for e in c.get("env", [])}
    join = env.get("WARREN_JOIN")
    if join is None:
        fail("the StatefulSet sets no WARREN_JOIN")
    entries = [e.strip() for e in join.split(",")]
    if len(entries) != replicas:
        fail("WARREN_JOIN has %d entries for %d replicas: %s" % (len(entries), replicas, join))
    for ordinal, entry in enumerate(entries):
        if not entry.startswith("%s-%d." % (name, ordinal)):
            fail("WARREN_JOIN entry %d is %r, expected pod %s-%d's address" % (ordinal, entry, name, ordinal))


def main():
    documents = []
    for path in sys.argv[1:]:
        with open(path) as f:
            documents += [(path, d) for d in yaml.safe_load_all(f) if d]
    if not documents:
        fail("no documents")
    for path, document in documents:
        for version in VERSIONS:
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                fail("%s: %s/%s against %s: %s" % (path, document["kind"], document["metadata"]["name"], version, e.message))
        if document["kind"] == "StatefulSet":
            check_join_list(document)
    # The negative control: an unknown field is refused.
    broken = copy.deepcopy(documents[0][1])
    broken["spec"]["replicaz"] = 3
    try:
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)
    except kubernetes_validate.ValidationError:
        pass
    else:
        fail("a manifest with an unknown field passed: the check cannot fail")
    statefulsets = sum(1 for _, d in documents if d["kind"] == "StatefulSet")
    print("manifests: ok (%d documents, %d StatefulSets, Kubernetes %s)" % (len(documents), statefulsets, ", ".join(VERSIONS)))


main()
