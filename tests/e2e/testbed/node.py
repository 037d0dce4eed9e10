"""The one Node the process kubelet stands for: registered Ready, with its kubelet API endpoint."""

from __future__ import annotations

import contextlib
import os

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .pod_run import now


def register_node(api: client.ApiClient, name: str, kubelet_port: int) -> None:
    core = client.CoreV1Api(api)
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
    }
    node = client.V1Node(metadata=client.V1ObjectMeta(name=name, labels=labels))
    with contextlib.suppress(ApiException):  # 409: left over from an earlier kubelet
        core.create_node(node)
    capacity = {"cpu": "2", "memory": "8Gi", "pods": "110", "ephemeral-storage": "20Gi"}
    version = client.VersionApi(api).get_code().git_version
    status = {
        "capacity": capacity,
        "allocatable": capacity,
        "addresses": [
            {"type": "InternalIP", "address": "127.0.0.1"},
            {"type": "Hostname", "address": name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "process kubelet is posting ready status",
                "lastHeartbeatTime": now(),
                "lastTransitionTime": now(),
            }
        ],
        "nodeInfo": {
            "kubeletVersion": version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
            "containerRuntimeVersion": "process://0",
            "kernelVersion": os.uname().release,
            "osImage": "schemashift test bed",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        },
    }
    core.patch_node_status(name, {"status": status})
