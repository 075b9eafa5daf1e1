"""Validates rendered manifests: custom resources against their CRD's schema.

    k8s-python3 tests/k8s/validate_crs.py CRD_DIR MANIFESTS.yaml CORE_OUT.yaml

- Each custom resource (an apiVersion whose group has a CRD in CRD_DIR) is
  validated against the `openAPIV3Schema` of its CRD version, converted to JSON
  Schema the way `kubectl --validate=strict` judges it: unknown fields are
  refused (`additionalProperties: false` wherever the schema lists properties
  and does not say `x-kubernetes-preserve-unknown-fields`), `nullable` admits
  null, `x-kubernetes-int-or-string` admits both. The one CEL rule
  (`x-kubernetes-validations`) on the kinds the chart renders, ScaledObject's
  minReplicaCount <= maxReplicaCount (default 100), is checked by hand below;
  a CRD with any other CEL rule on a rendered kind fails the run, so a new one
  cannot go unchecked.
- Every other object must be of a built-in API group; those are written to
  CORE_OUT for `kubernetes-validate --strict`.

Prints one line per object and exits 1 on the first kind of failure found
(all failures are listed).
"""

import copy
import glob
import sys

import jsonschema
import yaml

CORE_GROUPS = {"", "apps", "policy", "rbac.authorization.k8s.io", "autoscaling", "batch", "networking.k8s.io"}
# CEL rules this script checks by hand, by CRD kind: (message, check).
CEL_BY_HAND = {
    "ScaledObject": [
        (
            "minReplicaCount must be less than or equal to maxReplicaCount",
            lambda spec: "minReplicaCount" not in spec
            or spec["minReplicaCount"] <= spec.get("maxReplicaCount", 100),
        )
    ]
}


def strict(schema):
    """openAPIV3Schema (structural) → JSON Schema refusing unknown fields."""
    s = copy.deepcopy(schema)

    def walk(node):
        if not isinstance(node, dict):
            return node
        node.pop("x-kubernetes-validations", None)
        for k in ("x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type"):
            node.pop(k, None)
        preserve = node.pop("x-kubernetes-preserve-unknown-fields", False)
        if node.pop("x-kubernetes-int-or-string", False):
            node.pop("type", None)
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if node.pop("nullable", False) and "type" in node:
            node["type"] = [node["type"], "null"]
        for key in ("properties", "patternProperties"):
            if key in node:
                node[key] = {k: walk(v) for k, v in node[key].items()}
        for key in ("items", "additionalProperties", "not"):
            if isinstance(node.get(key), dict):
                node[key] = walk(node[key])
        for key in ("allOf", "anyOf", "oneOf"):
            if key in node:
                node[key] = [walk(v) for v in node[key]]
        if "properties" in node and "additionalProperties" not in node and not preserve:
            node["additionalProperties"] = False
        return node

    out = walk(s)
    # metadata is checked by the API server's ObjectMeta, not by the CRD.
    out.setdefault("properties", {})["metadata"] = {"type": "object"}
    out["properties"].setdefault("apiVersion", {"type": "string"})
    out["properties"].setdefault("kind", {"type": "string"})
    return out


def cel_rules(schema):
    found = []

    def walk(node):
        if isinstance(node, dict):
            for r in node.get("x-kubernetes-validations", []):
                found.append(r.get("message") or r.get("rule"))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    return found


def main():
    crd_dir, manifests, core_out = sys.argv[1:4]
    crds = {}
    for path in sorted(glob.glob(f"{crd_dir}/*.yaml")):
        with open(path) as f:
            for crd in yaml.safe_load_all(f):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                group = crd["spec"]["group"]
                kind = crd["spec"]["names"]["kind"]
                for v in crd["spec"]["versions"]:
                    crds[(f"{group}/{v['name']}", kind)] = (path, v["schema"]["openAPIV3Schema"])
    groups = {k[0].split("/")[0] for k in crds}
    with open(manifests) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    core, failures, checked = [], [], []
    for d in docs:
        api, kind = d.get("apiVersion", ""), d.get("kind", "")
        name = f"{kind}/{d.get('metadata', {}).get('name', '?')}"
        group = api.split("/")[0] if "/" in api else ""
        if (api, kind) in crds:
            path, schema = crds[(api, kind)]
            errors = sorted(
                jsonschema.Draft7Validator(strict(schema)).iter_errors(d),
                key=lambda e: list(e.absolute_path),
            )
            for e in errors:
                where = ".".join(str(p) for p in e.absolute_path) or "(root)"
                failures.append(f"{name}: {where}: {e.message}")
            by_hand = CEL_BY_HAND.get(kind, [])
            unchecked = [m for m in cel_rules(schema) if m not in [msg for msg, _ in by_hand]]
            if unchecked:
                failures.append(f"{name}: CEL rules of {path} not checked by this script: {unchecked}")
            for msg, check in by_hand:
                if not check(d.get("spec", {})):
                    failures.append(f"{name}: {msg}")
            checked.append(name)
            print(f"custom resource {name} ({api}): {'ok' if not errors else 'INVALID'} against {path}")
        elif group in CORE_GROUPS and group not in groups:
            core.append(d)
        else:
            failures.append(f"{name}: apiVersion {api} is neither built in nor one of the CRDs in {crd_dir}")
    with open(core_out, "w") as f:
        yaml.safe_dump_all(core, f, sort_keys=False)
    print(f"{len(checked)} custom resources validated, {len(core)} core objects written to {core_out}")
    if failures:
        print("FAILURES:\n" + "\n".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
