"""Invariants of a rendered overlay. Each check returns the problems it finds (an empty list: none), so that
tests can show every check passing on the real manifests and failing on a broken copy of them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

Doc = dict[str, Any]
NAMESPACE = "dermasynth"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")
SERVING_KINDS = ("Deployment", "StatefulSet")
GPU = "nvidia.com/gpu"
SECRET_WORDS = re.compile(r"PASSWORD|SECRET|PEPPER|TOKEN|ACCESS_KEY|ADMIN_KEY|API_KEY", re.I)
URL_WITH_PASSWORD = re.compile(r"://[^/@\s]*:[^/@\s]+@")


def of_kind(docs: list[Doc], *kinds: str) -> Iterator[Doc]:
    return (doc for doc in docs if doc["kind"] in kinds)


def named(docs: list[Doc], kind: str, name: str) -> Doc | None:
    return next((doc for doc in of_kind(docs, kind) if doc["metadata"]["name"] == name), None)


def the(docs: list[Doc], kind: str, name: str) -> Doc:
    """The one object of ``kind`` named ``name`` (KeyError when there is none)."""
    found = named(docs, kind, name)
    if found is None:
        raise KeyError(f"no {kind}/{name}")
    return found


def pod_spec(workload: Doc) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]  # type: ignore[no-any-return,unused-ignore]


def containers(workload: Doc, init: bool = True) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*(spec.get("initContainers", []) if init else []), *spec["containers"]]


def workload_name(workload: Doc) -> str:
    return f"{workload['kind']}/{workload['metadata']['name']}"


def config(docs: list[Doc]) -> dict[str, str]:
    found = named(docs, "ConfigMap", "dermasynth-config")
    return dict(found["data"]) if found else {}


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def container_environment(docs: list[Doc], container: dict[str, Any]) -> dict[str, str]:
    """The environment Kubernetes gives ``container``: envFrom ConfigMaps, then env entries, with ConfigMap and
    Secret keys resolved and $(VAR) references expanded as the kubelet does."""
    import base64

    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in of_kind(docs, "ConfigMap")}
    secrets = {
        d["metadata"]["name"]: {
            **{k: base64.b64decode(v).decode() for k, v in d.get("data", {}).items()},
            **d.get("stringData", {}),
        }
        for d in of_kind(docs, "Secret")
    }
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            environment.update(configmaps[source["configMapRef"]["name"]])
        if "secretRef" in source:
            environment.update(secrets[source["secretRef"]["name"]])
    for entry in container.get("env", []):
        if "value" in entry:
            environment[entry["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: environment.get(m.group(1), m.group(0)), entry["value"]
            )
            continue
        reference = entry["valueFrom"]
        if "secretKeyRef" in reference:
            environment[entry["name"]] = secrets[reference["secretKeyRef"]["name"]][reference["secretKeyRef"]["key"]]
        elif "configMapKeyRef" in reference:
            ref = reference["configMapKeyRef"]
            environment[entry["name"]] = configmaps[ref["name"]][ref["key"]]
    return environment


def queues_of(container: dict[str, Any]) -> set[str]:
    args = container.get("args", [])
    return set(args[args.index("-Q") + 1].split(",")) if "-Q" in args else set()


def prestop_seconds(container: dict[str, Any]) -> int:
    pre = container.get("lifecycle", {}).get("preStop")
    if not pre:
        return 0
    if "sleep" in pre:
        return int(pre["sleep"]["seconds"])
    command = " ".join(pre.get("exec", {}).get("command", []))
    found = re.search(r"sleep (\d+)", command)
    return int(found.group(1)) if found else 0


# ---- GPUs ---------------------------------------------------------------------------------------------------


def check_gpus(docs: list[Doc], gpu_cluster: bool) -> list[str]:
    """GPU clusters: worker-gpu and Triton request and limit one GPU, tolerate the GPU taint and run on GPU
    nodes, Triton builds GPU instance groups. CPU clusters: nothing asks for a GPU."""
    problems = []
    kind = config(docs).get("DERMASYNTH_SERVING_INSTANCE_KIND")
    if kind != ("gpu" if gpu_cluster else "cpu"):
        problems.append(f"DERMASYNTH_SERVING_INSTANCE_KIND is {kind!r} on a {'GPU' if gpu_cluster else 'CPU'} cluster")
    for workload in of_kind(docs, *WORKLOAD_KINDS):
        name = workload["metadata"]["name"]
        wants_gpu = gpu_cluster and name in {"worker-gpu", "triton"}
        for container in containers(workload):
            resources = container.get("resources", {})
            requested = resources.get("requests", {}).get(GPU)
            limited = resources.get("limits", {}).get(GPU)
            if wants_gpu and not (requested == limited == 1):
                problems.append(f"{workload_name(workload)}: {GPU} request/limit {requested}/{limited}, wants 1/1")
            if not wants_gpu and (requested or limited):
                problems.append(f"{workload_name(workload)}: asks for a GPU it should not have")
        spec = pod_spec(workload)
        if wants_gpu:
            tolerations = spec.get("tolerations", [])
            if not any(t.get("key") == GPU and t.get("operator") == "Exists" for t in tolerations):
                problems.append(f"{workload_name(workload)}: does not tolerate the {GPU} taint")
            if not spec.get("nodeSelector"):
                problems.append(f"{workload_name(workload)}: no nodeSelector for GPU nodes")
    worker = named(docs, "Deployment", "worker-gpu")
    if worker and gpu_cluster and "cuda" not in containers(worker)[0]["image"]:
        problems.append("worker-gpu does not run the CUDA image on a GPU cluster")
    return problems


# ---- probes, resources, security ----------------------------------------------------------------------------


def check_probes_and_resources(docs: list[Doc]) -> list[str]:
    """Every container: CPU and memory requests and limits. Long-running ones: readiness and liveness probes."""
    problems = []
    for workload in of_kind(docs, *WORKLOAD_KINDS):
        for container in containers(workload):
            where = f"{workload_name(workload)}/{container['name']}"
            resources = container.get("resources", {})
            for part in ("requests", "limits"):
                missing = {"cpu", "memory"} - set(resources.get(part, {}))
                if missing:
                    problems.append(f"{where}: no {part} for {sorted(missing)}")
        if workload["kind"] in SERVING_KINDS:
            for container in containers(workload, init=False):
                for probe in ("readinessProbe", "livenessProbe"):
                    if probe not in container:
                        problems.append(f"{workload_name(workload)}/{container['name']}: no {probe}")
                liveness = " ".join(container.get("livenessProbe", {}).get("exec", {}).get("command", []))
                if queues_of(container) and "inspect" in liveness and "ping" in liveness:
                    problems.append(
                        f"{workload_name(workload)}: `celery inspect ping` as liveness kills a solo-pool worker mid-job"
                    )
    return problems


def check_security(docs: list[Doc]) -> list[str]:
    """Pods meet the restricted Pod Security Standard and mount no API token; roots are read-only."""
    problems = []
    for workload in of_kind(docs, *WORKLOAD_KINDS):
        spec = pod_spec(workload)
        pod = spec.get("securityContext", {})
        where = workload_name(workload)
        if pod.get("runAsNonRoot") is not True:
            problems.append(f"{where}: pod not runAsNonRoot")
        if pod.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: no RuntimeDefault seccomp profile")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: mounts a service-account token it does not need")
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(flag):
                problems.append(f"{where}: {flag}")
        if any("hostPath" in volume for volume in spec.get("volumes", [])):
            problems.append(f"{where}: hostPath volume")
        for container in containers(workload):
            context = container.get("securityContext", {})
            cwhere = f"{where}/{container['name']}"
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{cwhere}: allowPrivilegeEscalation is not false")
            if context.get("privileged"):
                problems.append(f"{cwhere}: privileged")
            if context.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{cwhere}: capabilities not dropped")
            if context.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{cwhere}: writable root filesystem")
            if context.get("runAsUser") == 0 or pod.get("runAsUser") == 0:
                problems.append(f"{cwhere}: runs as root")
    namespace = named(docs, "Namespace", NAMESPACE)
    if namespace is None or namespace["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") != (
        "restricted"
    ):
        problems.append(f"namespace {NAMESPACE} does not enforce the restricted Pod Security Standard")
    return problems


# ---- images ---------------------------------------------------------------------------------------------------


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of an image reference."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else None
    repository = name[: len(name) - len(tag) - 1] if tag else name
    return repository, tag, digest or None


def check_images(docs: list[Doc]) -> list[str]:
    """Every image pinned (a version tag, never latest, or a digest); MinIO only from quay.io, by digest."""
    problems = []
    for workload in of_kind(docs, *WORKLOAD_KINDS):
        for container in containers(workload):
            image = container["image"]
            repository, tag, digest = split_image(image)
            where = f"{workload_name(workload)}/{container['name']}"
            if digest is None and (tag is None or tag == "latest"):
                problems.append(f"{where}: image {image} is not pinned (no tag, or latest)")
            if container.get("imagePullPolicy") == "Always" and digest is None:
                problems.append(f"{where}: pulls {image} on every start")
            if "minio" in repository:
                if not repository.startswith("quay.io/minio/"):
                    problems.append(f"{where}: MinIO image {image} is not from quay.io (Docker Hub's is gone)")
                if not (digest and re.fullmatch(r"sha256:[0-9a-f]{64}", digest)):
                    problems.append(f"{where}: MinIO image {image} is not pinned by digest")
    return problems


# ---- secrets ----------------------------------------------------------------------------------------------------


def check_secrets(docs: list[Doc]) -> list[str]:
    """No secret in a ConfigMap; containers take single keys of existing Secrets, never a whole Secret; the
    frontend gets none and Triton only its own."""
    problems = []
    secrets = {
        doc["metadata"]["name"]: set(doc.get("data", {})) | set(doc.get("stringData", {}))
        for doc in of_kind(docs, "Secret")
    }
    for configmap in of_kind(docs, "ConfigMap"):
        for key, value in configmap.get("data", {}).items():
            if SECRET_WORDS.search(key) or URL_WITH_PASSWORD.search(str(value)):
                problems.append(f"ConfigMap/{configmap['metadata']['name']}: {key} looks secret")
    for workload in of_kind(docs, *WORKLOAD_KINDS):
        name = workload["metadata"]["name"]
        for container in containers(workload):
            where = f"{workload_name(workload)}/{container['name']}"
            if any("secretRef" in source for source in container.get("envFrom", [])):
                problems.append(f"{where}: takes a whole Secret (envFrom); name the keys it needs")
            keys = set()
            for entry in container.get("env", []):
                if URL_WITH_PASSWORD.search(entry.get("value", "")) and "$(" not in entry.get("value", ""):
                    problems.append(f"{where}: {entry['name']} holds a password in plain text")
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    keys.add(ref["key"])
                    if ref["key"] not in secrets.get(ref["name"], set()):
                        problems.append(
                            f"{where}: {entry['name']} names {ref['name']}/{ref['key']}, which does not exist"
                        )
            if name == "frontend" and keys:
                problems.append(f"{where}: the frontend gets secrets {sorted(keys)}")
            if name == "triton" and not keys <= {"TRITON_S3_ACCESS_KEY", "TRITON_S3_SECRET_KEY", "TRITON_ADMIN_KEY"}:
                problems.append(f"{where}: Triton gets secrets other than its own: {sorted(keys)}")
            for volume in pod_spec(workload).get("volumes", []):
                if "secret" in volume and volume["secret"]["secretName"] not in secrets:
                    problems.append(f"{where}: mounts missing Secret {volume['secret']['secretName']}")
    return problems


# ---- Triton -----------------------------------------------------------------------------------------------------


def check_triton(docs: list[Doc]) -> list[str]:
    """Triton: no exposed port, gRPC off, model control restricted to a header only the gateway has, a startup
    probe, the object store read through its own read-only user."""
    problems = []
    for service in of_kind(docs, "Service"):
        if service["spec"].get("type", "ClusterIP") != "ClusterIP":
            problems.append(
                f"Service/{service['metadata']['name']} is {service['spec']['type']}: "
                "nothing is exposed but through the Ingress"
            )
    triton = named(docs, "Deployment", "triton")
    if triton is None:
        return [*problems, "no Triton Deployment"]
    container = containers(triton, init=False)[0]
    args = container.get("args", [])
    if "--allow-grpc=false" not in args:
        problems.append("Triton serves gRPC (unrestricted); it must be off")
    if "--model-control-mode=explicit" not in args:
        problems.append("Triton does not use explicit model control")
    restricted = next((a for a in args if a.startswith("--http-restricted-api=")), None)
    match = re.fullmatch(r"--http-restricted-api=([a-z,\-]+):([A-Za-z0-9\-]+)=\$\((\w+)\)", restricted or "")
    if not match or not {"model-repository", "model-config", "shared-memory"} <= set(match.group(1).split(",")):
        problems.append(f"Triton's model control is not restricted: {restricted}")
    else:
        gateway = named(docs, "Deployment", "gateway")
        triton_key = env_of(container).get(match.group(3), {}).get("valueFrom", {}).get("secretKeyRef", {})
        gateway_key = (
            env_of(containers(gateway)[0])
            .get("DERMASYNTH_TRITON_ADMIN_KEY", {})
            .get("valueFrom", {})
            .get("secretKeyRef", {})
            if gateway
            else {}
        )
        if not triton_key or triton_key != gateway_key:
            problems.append("Triton's restricted-API key is not the gateway's DERMASYNTH_TRITON_ADMIN_KEY")
    if "startupProbe" not in container:
        problems.append("Triton has no startupProbe")
    access = env_of(container).get("AWS_ACCESS_KEY_ID", {}).get("valueFrom", {}).get("secretKeyRef", {})
    if access.get("key") != "TRITON_S3_ACCESS_KEY":
        problems.append(f"Triton reads the store as {access.get('key')}, not its read-only user")
    return problems


# ---- workers: shutdown and autoscaling ------------------------------------------------------------------------


def check_worker_shutdown(docs: list[Doc], shutdown_grace_s: int) -> list[str]:
    """Worker pods wait at least the worker's shutdown grace + 30 s before killing it, and preStop does not
    delay the SIGTERM more than 5 s."""
    problems = []
    configured = int(config(docs).get("DERMASYNTH_WORKER_SHUTDOWN_GRACE_S", shutdown_grace_s))
    grace = max(configured, shutdown_grace_s)
    for worker in of_kind(docs, "Deployment"):
        container = containers(worker, init=False)[0]
        if not queues_of(container):
            continue
        period = pod_spec(worker).get("terminationGracePeriodSeconds", 30)
        pause = prestop_seconds(container)
        if pause > 5:
            problems.append(f"{workload_name(worker)}: preStop delays SIGTERM {pause} s (> 5)")
        if period < grace + pause + 25 or period < grace + 30:
            problems.append(
                f"{workload_name(worker)}: terminationGracePeriodSeconds {period} < shutdown grace {grace} + 30"
            )
    return problems


def service_address(docs: list[Doc]) -> dict[str, set[int]]:
    """Fully qualified `name.namespace.svc.cluster.local` of each Service -> its ports."""
    return {
        f"{s['metadata']['name']}.{s['metadata'].get('namespace', NAMESPACE)}.svc.cluster.local": {
            p["port"] for p in s["spec"]["ports"]
        }
        for s in of_kind(docs, "Service")
    }


def check_autoscaling(docs: list[Doc], key_prefix: str) -> list[str]:
    """KEDA: every worker scaled on queued + running jobs of each of its queues, added into one metric; Redis
    named by its full DNS name with a password from an existing Secret key."""
    problems = []
    addresses = service_address(docs)
    auths = {doc["metadata"]["name"]: doc for doc in of_kind(docs, "TriggerAuthentication")}
    secrets = {
        doc["metadata"]["name"]: set(doc.get("data", {})) | set(doc.get("stringData", {}))
        for doc in of_kind(docs, "Secret")
    }
    workers = {w["metadata"]["name"]: queues_of(containers(w, init=False)[0]) for w in of_kind(docs, "Deployment")}
    workers = {name: queues for name, queues in workers.items() if queues}
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in of_kind(docs, "ScaledObject")}
    for name, queues in workers.items():
        scaler = scaled.get(name)
        if scaler is None:
            problems.append(f"worker {name} is not autoscaled")
            continue
        triggers = scaler["spec"]["triggers"]
        lists = {t["metadata"].get("listName"): t.get("name") for t in triggers if t["type"] == "redis"}
        for queue in queues:
            for key in (f"{key_prefix}:celery:{queue}", f"{key_prefix}:jobs:running:{queue}"):
                if key not in lists:
                    problems.append(f"{name}: no trigger on {key}")
        formula = scaler["spec"].get("advanced", {}).get("scalingModifiers", {}).get("formula", "")
        terms = set(re.split(r"\s*\+\s*", formula.strip())) if formula else set()
        if terms != {t.get("name") for t in triggers}:
            problems.append(f"{name}: scalingModifiers formula {formula!r} is not the sum of all its triggers")
        for trigger in triggers:
            metadata = trigger["metadata"]
            if trigger["type"] != "redis":
                continue
            host, _, port = metadata.get("address", "").rpartition(":")
            if host not in addresses or not port.isdigit() or int(port) not in addresses[host]:
                problems.append(
                    f"{name}: redis trigger address {metadata.get('address')!r} "
                    "is not a Service's full DNS name and port"
                )
            auth = auths.get(trigger.get("authenticationRef", {}).get("name", ""))
            refs = auth["spec"].get("secretTargetRef", []) if auth else []
            if not any(r["parameter"] == "password" and r["key"] in secrets.get(r["name"], set()) for r in refs):
                problems.append(f"{name}: redis trigger has no password from an existing Secret key")
    for target in scaled:
        if target not in workers:
            problems.append(f"ScaledObject targets {target}, which is not a worker Deployment")
    return problems


# ---- availability -----------------------------------------------------------------------------------------------


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()) and all(
        (labels.get(e["key"]) in e.get("values", [])) == (e["operator"] == "In")
        for e in selector.get("matchExpressions", [])
    )


def check_availability(docs: list[Doc]) -> list[str]:
    """A PodDisruptionBudget for every long-running workload, none blocking drains for ever; the gateway's
    HPA and every Service point at something that exists; the Ingress serves TLS."""
    problems = []
    budgets = list(of_kind(docs, "PodDisruptionBudget"))
    for workload in of_kind(docs, *SERVING_KINDS):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in budgets if selects(b["spec"]["selector"], labels)]
        if not covering:
            problems.append(f"{workload_name(workload)}: no PodDisruptionBudget")
        for budget in covering:
            spec = budget["spec"]
            if spec.get("maxUnavailable", 1) == 0 or spec.get("minAvailable", 0) >= max(
                workload["spec"].get("replicas", 1), 1
            ):
                problems.append(f"PodDisruptionBudget/{budget['metadata']['name']} never allows an eviction")
    deployments = {d["metadata"]["name"] for d in of_kind(docs, "Deployment")}
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        if hpa["spec"]["scaleTargetRef"]["name"] not in deployments:
            problems.append(f"HPA {hpa['metadata']['name']} targets a missing Deployment")
    if not any(named(docs, "HorizontalPodAutoscaler", "gateway") for _ in [0]):
        problems.append("the gateway has no HorizontalPodAutoscaler")
    for ingress in of_kind(docs, "Ingress"):
        hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
        tls_hosts = {h for tls in ingress["spec"].get("tls", []) if tls.get("secretName") for h in tls["hosts"]}
        if not hosts <= tls_hosts:
            problems.append(f"Ingress {ingress['metadata']['name']}: hosts {sorted(hosts - tls_hosts)} without TLS")
        services = {s["metadata"]["name"] for s in of_kind(docs, "Service")}
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                if path["backend"]["service"]["name"] not in {"gateway", "frontend"} & services:
                    problems.append(f"Ingress routes {path['path']} to {path['backend']['service']['name']}")
    return problems


# ---- network policies ------------------------------------------------------------------------------------------

# Pods outside the namespace that DermaSynth expects to talk to, and a stranger in each place.
EXTERNAL_PODS: dict[str, tuple[str, dict[str, str]]] = {
    "ingress": ("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}),
    "keda": ("keda", {"app.kubernetes.io/name": "keda-operator"}),
    "monitoring": ("monitoring", {"app.kubernetes.io/name": "prometheus"}),
    "dns": ("kube-system", {"k8s-app": "kube-dns"}),
    "outsider": ("default", {"app": "something-else"}),
    "stranger": (NAMESPACE, {"app": "debug-shell"}),
}
EXPECTED_PATHS = {
    ("gateway", "redis", 6379),
    ("worker-gpu", "redis", 6379),
    ("worker-cpu", "redis", 6379),
    ("keda", "redis", 6379),
    ("gateway", "minio", 9000),
    ("worker-gpu", "minio", 9000),
    ("worker-cpu", "minio", 9000),
    ("triton", "minio", 9000),
    ("minio-init", "minio", 9000),
    ("gateway", "triton", 8000),
    ("monitoring", "triton", 8002),
    ("frontend", "gateway", 8080),
    ("ingress", "gateway", 8080),
    ("monitoring", "gateway", 8080),
    ("ingress", "frontend", 8501),
    ("monitoring", "worker-gpu", 9808),
    ("monitoring", "worker-cpu", 9808),
}


def _peer_matches(peer: dict[str, Any], policy_namespace: str, namespace: str, labels: dict[str, str]) -> bool:
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace}):
            return False
    elif namespace != policy_namespace:
        return False
    return selects(peer.get("podSelector", {}), labels)


def _port_matches(rule: dict[str, Any], port: int, named_ports: dict[str, int]) -> bool:
    if "ports" not in rule:
        return True
    for entry in rule["ports"]:
        if entry.get("protocol", "TCP") not in {"TCP", None}:
            continue
        wanted = entry.get("port")
        if wanted is None or wanted == port or named_ports.get(str(wanted)) == port:
            return True
    return False


def _allowed(
    policies: list[Doc],
    direction: str,
    pod: tuple[str, dict[str, str]],
    peer: tuple[str, dict[str, str]],
    port: int,
    named_ports: dict[str, int],
) -> bool:
    """Whether the policies of pod's namespace let `peer` in (Ingress) or `pod` out to `peer` (Egress)."""
    namespace, labels = pod
    if namespace != NAMESPACE:
        return True  # other namespaces' policies are theirs; assume open
    applying = [
        p
        for p in policies
        if direction in p["spec"].get("policyTypes", ["Ingress"]) and selects(p["spec"]["podSelector"], labels)
    ]
    if not applying:
        return True
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in applying:
        for rule in policy["spec"].get(key, []) or []:
            peers = rule.get(peers_key)
            peer_ok = peers is None or any(_peer_matches(p, NAMESPACE, peer[0], peer[1]) for p in peers)
            if peer_ok and _port_matches(rule, port, named_ports):
                return True
    return False


def reachability(docs: list[Doc]) -> tuple[set[tuple[str, str, int]], set[str]]:
    """(source, destination, port) for every open TCP path to a pod of the namespace, and the pods that
    cannot resolve names."""
    policies = list(of_kind(docs, "NetworkPolicy"))
    pods: dict[str, tuple[str, dict[str, str]]] = {}
    ports: dict[str, dict[str, int]] = {}
    for workload in of_kind(docs, *WORKLOAD_KINDS):
        name = workload["metadata"]["name"]
        pods[name] = (NAMESPACE, workload["spec"]["template"]["metadata"]["labels"])
        ports[name] = {
            p.get("name", str(p["containerPort"])): p["containerPort"]
            for c in containers(workload)
            for p in c.get("ports", [])
        }
    everyone = {**pods, **EXTERNAL_PODS}
    paths = set()
    for source, src in everyone.items():
        for target, dst in pods.items():
            for port in ports[target].values():
                if _allowed(policies, "Egress", src, dst, port, ports[target]) and _allowed(
                    policies, "Ingress", dst, src, port, ports[target]
                ):
                    paths.add((source, target, port))
    no_dns = {name for name, pod in pods.items() if not _allowed(policies, "Egress", pod, EXTERNAL_PODS["dns"], 53, {})}
    return paths, no_dns


def check_network(docs: list[Doc]) -> list[str]:
    """Default deny; exactly the expected paths are open (the frontend reaches only the gateway, only the
    gateway reaches Triton, only the gateway, the workers and KEDA reach Redis ...); every pod resolves names;
    every pod is selected by a policy for both directions."""
    problems = []
    paths, no_dns = reachability(docs)
    for path in sorted(paths - EXPECTED_PATHS):
        problems.append(f"open path not in the design: {path[0]} -> {path[1]}:{path[2]}")
    for path in sorted(EXPECTED_PATHS - paths):
        problems.append(f"needed path blocked: {path[0]} -> {path[1]}:{path[2]}")
    for name in sorted(no_dns):
        problems.append(f"{name} cannot reach kube-dns")
    policies = list(of_kind(docs, "NetworkPolicy"))
    for workload in of_kind(docs, *WORKLOAD_KINDS):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        for direction in ("Ingress", "Egress"):
            if not any(
                direction in p["spec"].get("policyTypes", []) and selects(p["spec"]["podSelector"], labels)
                for p in policies
            ):
                problems.append(f"{workload_name(workload)}: no NetworkPolicy for {direction}")
    return problems


CHECKS: dict[str, Callable[..., list[str]]] = {
    "gpus": check_gpus,
    "probes_and_resources": check_probes_and_resources,
    "security": check_security,
    "images": check_images,
    "secrets": check_secrets,
    "triton": check_triton,
    "worker_shutdown": check_worker_shutdown,
    "autoscaling": check_autoscaling,
    "availability": check_availability,
    "network": check_network,
}
