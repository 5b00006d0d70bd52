"""Schema validation of rendered objects: Kubernetes' own kinds with kubernetes-validate (schemas bundled in the
package, strict: unknown fields are errors) at a pinned release, KEDA's kinds with tests/k8s/crds/keda.yaml."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from tests.k8s.render import KUBERNETES_VERSION

CRDS = Path(__file__).resolve().parent / "crds" / "keda.yaml"


@cache
def keda_schemas() -> dict[str, dict[str, Any]]:
    """kind -> JSON schema of KEDA's custom resources (the CRDs' openAPIV3Schema with the shared $defs)."""
    documents = [doc for doc in yaml.safe_load_all(CRDS.read_text()) if doc]
    definitions = next(doc["definitions"] for doc in documents if doc["kind"] == "Definitions")
    schemas = {}
    for crd in (doc for doc in documents if doc["kind"] == "CustomResourceDefinition"):
        schema = copy.deepcopy(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        schema["$defs"] = definitions
        jsonschema.Draft202012Validator.check_schema(schema)
        schemas[crd["spec"]["names"]["kind"]] = schema
    return schemas


def problems(doc: dict[str, Any]) -> list[str]:
    """What is wrong with one object, or nothing."""
    name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    if str(doc.get("apiVersion", "")).startswith("keda.sh/"):
        schema = keda_schemas().get(doc["kind"])
        if schema is None:
            return [f"{name}: no schema for KEDA kind {doc['kind']} in {CRDS.name}"]
        validator = jsonschema.Draft202012Validator(schema)
        return [f"{name}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{name}: {doc.get('apiVersion')} {doc.get('kind')} does not exist in Kubernetes {KUBERNETES_VERSION}"]
    except kubernetes_validate.ValidationError as error:
        return [f"{name}: {'/'.join(map(str, error.path))}: {error.message}"]
    return []
