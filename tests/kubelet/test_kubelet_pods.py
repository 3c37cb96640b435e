"""Real pods on a real node: ``k3py agent`` joined to a server, driven by kubectl."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

from tests.cluster import find_kubectl
from tests.kubelet.conftest import NODE, kubelet_get, kubelet_websocket, wait_pod


def phase_is(phase: str):  # type: ignore[no-untyped-def]
    return lambda pod: pod.get("status", {}).get("phase") == phase


def test_node_registered_with_host_capacity_and_lease(agent_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, _node = agent_cluster
    node = cluster.kubectl_json("get", "node", NODE)
    labels = node["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == NODE
    assert labels["kubernetes.io/os"] == "linux"
    assert node["spec"]["podCIDR"] == "10.42.0.0/24"
    capacity = node["status"]["capacity"]
    assert set(capacity) >= {"cpu", "memory", "ephemeral-storage", "pods"}
    assert capacity["pods"] == "110"
    # Measured from this host (the agent runs here), and all of it allocatable.
    import os
    import platform

    assert capacity["cpu"] == str(os.cpu_count())
    mem_total_ki = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                        if line.startswith("MemTotal:"))
    assert capacity["memory"] == f"{mem_total_ki}Ki"
    assert node["status"]["allocatable"] == capacity
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    assert labels["kubernetes.io/arch"] == arch and "node-role.kubernetes.io/control-plane" not in labels
    info = node["status"]["nodeInfo"]
    assert (info["kernelVersion"], info["architecture"], info["operatingSystem"]) == (
        platform.release(), arch, "linux")
    assert {a["type"] for a in node["status"]["addresses"]} == {"InternalIP", "Hostname"}
    types = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert types == {"MemoryPressure": "False", "DiskPressure": "False", "PIDPressure": "False", "Ready": "True"}
    (image,) = node["status"]["images"]
    assert "docker.io/library/busybox:latest" in image["names"] and image["sizeBytes"] > 0
    lease = cluster.kubectl_json("get", "lease", NODE, "-n", "kube-node-lease")
    assert lease["spec"]["holderIdentity"] == NODE


def test_kubectl_run_busybox_runs_with_pod_ip(agent_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, _node = agent_cluster
    cluster.kubectl("run", "sleeper", "--image=busybox", "--image-pull-policy=IfNotPresent", "--restart=Never", "--", "sleep", "3600")
    pod = wait_pod(cluster, "sleeper", phase_is("Running"), "Running")
    status = pod["status"]
    assert status["podIP"].startswith("10.42.0."), status
    assert status["hostIP"]
    (container,) = status["containerStatuses"]
    assert container["ready"] is True and "running" in container["state"]
    assert container["containerID"].startswith("k3py://")
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Ready"] == "True" and conditions["Initialized"] == "True"
    assert status["qosClass"] == "BestEffort"
    table = cluster.kubectl("get", "pod", "sleeper", "-o", "wide").stdout
    assert "Running" in table and status["podIP"] in table and NODE in table
    # Someone else overwrites the status: the kubelet writes the truth again.
    cluster.kubectl("patch", "pod", "sleeper", "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": {"phase": "Pending", "podIP": None, "podIPs": None}}))
    restored = wait_pod(cluster, "sleeper", phase_is("Running"), "the kubelet's status back")["status"]
    assert restored["podIP"] == status["podIP"]


def test_pod_exiting_zero_completes(agent_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, _node = agent_cluster
    cluster.kubectl("run", "oneshot", "--image=busybox", "--image-pull-policy=IfNotPresent", "--restart=Never", "--", "sh", "-c", "echo hello from oneshot")
    pod = wait_pod(cluster, "oneshot", phase_is("Succeeded"), "Succeeded")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
    assert "Completed" in cluster.kubectl("get", "pod", "oneshot").stdout


def test_failing_pod_goes_into_crash_loop(agent_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, _node = agent_cluster
    cluster.kubectl("run", "crasher", "--image=busybox", "--image-pull-policy=IfNotPresent", "--", "sh", "-c", "echo boom; exit 3")

    def looping(pod: dict) -> bool:
        statuses = pod.get("status", {}).get("containerStatuses") or []
        return bool(statuses) and statuses[0]["restartCount"] >= 1 and \
            statuses[0]["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff"

    pod = wait_pod(cluster, "crasher", looping, "CrashLoopBackOff after a restart", timeout=40)
    status = pod["status"]["containerStatuses"][0]
    assert status["lastState"]["terminated"]["exitCode"] == 3
    assert status["lastState"]["terminated"]["reason"] == "Error"
    assert pod["status"]["phase"] == "Running"
    assert "CrashLoopBackOff" in cluster.kubectl("get", "pod", "crasher").stdout


def test_configmap_as_env_and_volume(agent_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, _node = agent_cluster
    cluster.kubectl("create", "configmap", "settings", "--from-literal=GREETING=hi there",
                    "--from-literal=color=blue")
    cluster.kubectl("create", "secret", "generic", "creds", "--from-literal=password=s3cret")
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "cm-reader", "labels": {"app": "reader"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "echo env=$GREETING; echo file=$(cat /config/color); echo expanded=$(MSG); "
                            "echo secret=$PASSWORD $(cat /creds/password) $(stat -L -c %a /creds/password); "
                            "cat /info/labels"],
                "env": [{"name": "MSG", "value": "say $(GREETING)"},
                        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}],
                "envFrom": [{"configMapRef": {"name": "settings"}}],
                "volumeMounts": [{"name": "cfg", "mountPath": "/config"},
                                 {"name": "creds", "mountPath": "/creds"},
                                 {"name": "info", "mountPath": "/info"}],
            }],
            "volumes": [{"name": "cfg", "configMap": {"name": "settings"}},
                        {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}},
                        {"name": "info", "downwardAPI": {"items": [
                            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    host_pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hostnet"},
        "spec": {"hostNetwork": True, "restartPolicy": "Never",
                 "containers": [{"name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent", "command": ["cat", "/proc/net/dev"]}]},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(host_pod))
    wait_pod(cluster, "cm-reader", phase_is("Succeeded"), "Succeeded")
    code, body = kubelet_get(cluster, "/containerLogs/default/cm-reader/main")
    assert code == 200, body
    expected = ["env=hi there", "file=blue", "expanded=say hi there", "secret=s3cret s3cret 400", 'app="reader"']
    assert body.decode().splitlines() == expected
    # The same through the API server's pods/log proxy, as users read it.
    assert cluster.kubectl("logs", "cm-reader").stdout.splitlines() == expected


def test_logs_tail_timestamps_and_previous(agent_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, _node = agent_cluster
    # The crasher of the crash-loop test has run at least twice by now.
    code, body = kubelet_get(cluster, "/containerLogs/default/crasher/crasher?previous=true")
    assert code == 200 and body == b"boom\n", body
    assert cluster.kubectl("logs", "crasher", "--previous").stdout == "boom\n"
    # logs -f follows a running container until it exits.
    cluster.kubectl("run", "talker", "--image=busybox", "--image-pull-policy=IfNotPresent", "--restart=Never", "--",
                    "sh", "-c", "echo first; sleep 2; echo second")
    wait_pod(cluster, "talker", phase_is("Running"), "Running")
    assert cluster.kubectl("logs", "-f", "talker", timeout=30).stdout == "first\nsecond\n"
    code, body = kubelet_get(cluster, "/containerLogs/default/oneshot/oneshot?timestamps=true&tailLines=1")
    assert code == 200
    stamp, _, text = body.decode().rstrip("\n").partition(" ")
    assert text == "hello from oneshot" and stamp.endswith("Z") and "T" in stamp
    wait_pod(cluster, "hostnet", phase_is("Succeeded"), "Succeeded")
    code, body = kubelet_get(cluster, "/containerLogs/default/hostnet/main")
    assert code == 200 and b"k3py0:" in body, body  # it sees the node's bridge
    code, body = kubelet_get(cluster, "/containerLogs/default/no-such-pod/main")
    assert code == 404, body


def test_delete_honours_grace_period(agent_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, node = agent_cluster
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stubborn"},
        "spec": {
            "terminationGracePeriodSeconds": 3,
            "containers": [{"name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                            "command": ["sh", "-c", "trap '' TERM; while true; do sleep 0.2; done"]}],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    wait_pod(cluster, "stubborn", phase_is("Running"), "Running")
    started = time.monotonic()
    cluster.kubectl("delete", "pod", "stubborn", "--wait=true", timeout=60)
    elapsed = time.monotonic() - started
    assert 2.5 <= elapsed < 12, f"deletion took {elapsed:.1f}s for a 3 s grace period ignoring SIGTERM"
    assert cluster.kubectl("get", "pod", "stubborn", check=False).returncode != 0
    # The container and the sandbox are gone from the node.
    from k3py.runtime.containers import ContainerRuntime

    runtime = ContainerRuntime(node.data_dir / "runtime")
    assert not [c for c in runtime.list_containers() if c.labels.get("io.kubernetes.pod.name") == "stubborn"]
    assert not [s for s in runtime.list_sandboxes() if s.name.startswith("default_stubborn_")]


def test_sigterm_ends_pod_quickly(agent_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, _node = agent_cluster
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "polite"},
        "spec": {"containers": [{"name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                                 "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]}]},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    wait_pod(cluster, "polite", phase_is("Running"), "Running")
    started = time.monotonic()
    cluster.kubectl("delete", "pod", "polite", "--wait=true", timeout=60)
    assert time.monotonic() - started < 10  # far below the 30 s grace period: SIGTERM ended it


def test_agent_restart_keeps_pods_running(agent_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, node = agent_cluster
    cluster.kubectl("run", "survivor", "--image=busybox", "--image-pull-policy=IfNotPresent", "--", "sleep", "3600")
    watched = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "watched"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"],
            "livenessProbe": {"exec": {"command": ["test", "!", "-e", "/tmp/dead"]},
                              "periodSeconds": 1, "failureThreshold": 1}}]},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(watched))
    before = wait_pod(cluster, "survivor", phase_is("Running"), "Running")["status"]
    watched_id = wait_pod(cluster, "watched", phase_is("Running"), "Running")["status"][
        "containerStatuses"][0]["containerID"].removeprefix("k3py://")
    node.stop()
    # While the agent is away the container's liveness breaks: the restarted agent must probe again.
    from k3py.runtime.containers import ContainerRuntime

    assert ContainerRuntime(node.data_dir / "runtime").exec_sync(watched_id, ["touch", "/tmp/dead"]).exit_code == 0
    node.start()
    node.wait_node_ready()
    # A pod created while the agent was away and one created after it is back both start.
    cluster.kubectl("run", "newcomer", "--image=busybox", "--image-pull-policy=IfNotPresent", "--", "sleep", "3600")
    wait_pod(cluster, "newcomer", phase_is("Running"), "Running")
    after = wait_pod(cluster, "survivor", phase_is("Running"), "Running")["status"]
    assert after["containerStatuses"][0]["containerID"] == before["containerStatuses"][0]["containerID"]
    assert after["containerStatuses"][0]["restartCount"] == 0
    assert after["podIP"] == before["podIP"] and after["startTime"] == before["startTime"]
    wait_pod(cluster, "watched", lambda p: p["status"]["containerStatuses"][0]["restartCount"] >= 1,
             "a liveness restart after the agent came back")
    # Deleting works for the adopted pod too.
    cluster.kubectl("delete", "pod", "survivor", "newcomer", "watched", "--grace-period=1", "--wait=true",
                    timeout=60)


def test_exec_through_the_kubelet_websocket(agent_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, _node = agent_cluster
    cluster.kubectl("create", "service", "clusterip", "backend", "--tcp=80:8080")
    cluster.kubectl("run", "execme", "--image=busybox", "--image-pull-policy=IfNotPresent", "--", "sleep", "3600")
    wait_pod(cluster, "execme", phase_is("Running"), "Running")
    query = "&".join(["command=sh", "command=-c", "command=echo out%3B hostname%3B echo err >%262%3B exit 7",
                      "stdout=1", "stderr=1"])
    frames = kubelet_websocket(cluster, f"/exec/default/execme/execme?{query}", "v4.channel.k8s.io")
    stdout = b"".join(f[1:] for f in frames if f[:1] == b"\x01")
    stderr = b"".join(f[1:] for f in frames if f[:1] == b"\x02")
    error = json.loads(b"".join(f[1:] for f in frames if f[:1] == b"\x03"))
    assert stdout == b"out\nexecme\n" and stderr == b"err\n"
    assert error["reason"] == "NonZeroExitCode"
    assert error["details"]["causes"][0]["message"] == "7"
    # Real kubectl exec through the API server's proxy.
    result = cluster.kubectl("exec", "execme", "--", "sh", "-c", "echo via-kubectl; exit 3", check=False)
    assert result.stdout == "via-kubectl\n" and result.returncode == 3, result
    # The pod's own /etc/hosts, /etc/hostname and /etc/resolv.conf, and the kubernetes Service env.
    pod_ip = cluster.kubectl_json("get", "pod", "execme")["status"]["podIP"]
    query = "&".join(["command=sh", "command=-c",
                      "command=cat /etc/hostname /etc/hosts /etc/resolv.conf%3B echo $BACKEND_SERVICE_PORT"
                      " $KUBERNETES_SERVICE_PORT",
                      "stdout=1"])
    frames = kubelet_websocket(cluster, f"/exec/default/execme/execme?{query}", "v4.channel.k8s.io")
    text = b"".join(f[1:] for f in frames if f[:1] == b"\x01").decode()
    assert text.startswith("execme\n")
    assert f"{pod_ip}\texecme" in text
    assert "nameserver 10.43.0.10" in text and "search default.svc.cluster.local" in text
    assert text.rstrip().endswith("80 443")  # service links of the namespace, and the API's


def test_init_container_probes_and_port_forward(agent_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, node = agent_cluster
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
        "spec": {
            "initContainers": [{"name": "prepare", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                                "command": ["sh", "-c", "echo served-page > /www/index.html"],
                                "volumeMounts": [{"name": "www", "mountPath": "/www"}]}],
            "containers": [{
                "name": "httpd", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],
                "ports": [{"name": "http", "containerPort": 8080, "hostPort": 18080}],
                "volumeMounts": [{"name": "www", "mountPath": "/www"}],
                "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
                "readinessProbe": {"httpGet": {"path": "/index.html", "port": "http"}, "periodSeconds": 1},
                "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                "startupProbe": {"exec": {"command": ["test", "-s", "/www/index.html"]}, "periodSeconds": 1},
            }],
            "volumes": [{"name": "www", "emptyDir": {}}],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))

    def ready(pod: dict) -> bool:
        conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
        return conditions.get("Ready") == "True"

    status = wait_pod(cluster, "web", ready, "Ready")["status"]
    (init,) = status["initContainerStatuses"]
    assert init["state"]["terminated"]["reason"] == "Completed" and init["ready"] is True
    assert status["containerStatuses"][0]["started"] is True
    assert status["qosClass"] == "Burstable"  # the init container has no limits
    # The limits are the container's cgroup settings.
    from k3py.runtime.cgroups import Cgroup
    from k3py.runtime.containers import default_cgroup_parent

    uid = cluster.kubectl_json("get", "pod", "web")["metadata"]["uid"]
    top = default_cgroup_parent(node.data_dir / "runtime")  # the agent's data dir owns it
    cgroup = Cgroup(f"{top}/kubepods/burstable/pod{uid}",
                    status["containerStatuses"][0]["containerID"].removeprefix("k3py://"))
    if cgroup.v2:
        assert Path(cgroup.dirs[""], "memory.max").read_text().strip() == str(64 << 20)
        assert Path(cgroup.dirs[""], "cpu.max").read_text().split()[0] == "50000"
    else:
        assert Path(cgroup.dirs["memory"], "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
        assert Path(cgroup.dirs["cpu"], "cpu.cfs_quota_us").read_text().strip() == "50000"
    # The hostPort reaches the pod from the node.
    def fetch() -> bytes:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", 18080, timeout=10)
        try:
            conn.request("GET", "/index.html")
            return conn.getresponse().read()
        finally:
            conn.close()

    assert cluster.in_netns(fetch) == b"served-page\n"
    # Real kubectl port-forward through the API server: the dispatcher's kubectl (WebSockets)
    # and kubectl 1.27, which speaks SPDY only.
    assert cluster.host is not None
    for version, local_port in ((None, 18090), ("1.27", 18091)):
        forward = subprocess.Popen(
            cluster.host.exec_argv([find_kubectl(version), "--kubeconfig", str(cluster.kubeconfig),
                                    "--cache-dir", str(cluster.cache_dir / (version or "default")),
                                    "port-forward", "pod/web", f"{local_port}:8080"]),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            assert forward.stdout is not None
            first = forward.stdout.readline()
            assert f"Forwarding from 127.0.0.1:{local_port}" in first, first

            def via_forward(port: int = local_port) -> bytes:
                import http.client

                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                try:
                    conn.request("GET", "/index.html")
                    return conn.getresponse().read()
                finally:
                    conn.close()

            assert cluster.in_netns(via_forward) == b"served-page\n", version
        finally:
            forward.terminate()
            forward.wait(timeout=10)
    frames = kubelet_websocket(cluster, "/portForward/default/web?ports=8080", "v4.channel.k8s.io",
                               send=[b"\x00GET /index.html HTTP/1.0\r\n\r\n"],
                               done=lambda frames: b"served-page" in b"".join(frames))
    data = b"".join(f[1:] for f in frames if f[:1] == b"\x00")
    # Each channel first carries its port (2 bytes, little endian), then the bytes of the connection.
    assert data[:2] == (8080).to_bytes(2, "little")
    assert data[2:].startswith(b"HTTP/1.") and data.endswith(b"served-page\n"), data


def test_liveness_failure_restarts_and_oom_is_reported(agent_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, _node = agent_cluster
    pods = [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "unhealthy"},
         "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
             "name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"],
             "livenessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 1}}]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hog"},
         "spec": {"restartPolicy": "Never", "containers": [{
             "name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent",
             "command": ["sh", "-c", "head -c 200m /dev/zero | tail"],
             "resources": {"limits": {"memory": "32Mi"}}}]}},
    ]
    pods += [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
         "spec": {"restartPolicy": "Never", "containers": [{
             "name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", script],
             "terminationMessagePolicy": policy}]}}
        for name, script, policy in (
            ("lastwords", "echo goodbye > /dev/termination-log; exit 2", "File"),
            ("fallback", "echo from the log; exit 1", "FallbackToLogsOnError"),
        )
    ]
    pods.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "deadline"},
                 "spec": {"activeDeadlineSeconds": 2, "terminationGracePeriodSeconds": 1,
                          "containers": [{"name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]}]}})
    for pod in pods:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    expired = wait_pod(cluster, "deadline", phase_is("Failed"), "Failed by its deadline", timeout=20)["status"]
    assert expired["reason"] == "DeadlineExceeded"
    assert "terminated" in expired["containerStatuses"][0]["state"]
    for name, message in (("lastwords", "goodbye\n"), ("fallback", "from the log\n")):
        failed = wait_pod(cluster, name, phase_is("Failed"), "Failed")
        assert failed["status"]["containerStatuses"][0]["state"]["terminated"]["message"] == message

    def restarted(pod: dict) -> bool:
        statuses = pod.get("status", {}).get("containerStatuses") or []
        return bool(statuses) and statuses[0]["restartCount"] >= 1

    wait_pod(cluster, "unhealthy", restarted, "a restart after the liveness probe failed", timeout=40)
    events = cluster.kubectl("get", "events", "--field-selector", "involvedObject.name=unhealthy").stdout
    assert "Unhealthy" in events and "failed liveness probe" in events
    hog = wait_pod(cluster, "hog", phase_is("Failed"), "Failed")
    terminated = hog["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["reason"] == "OOMKilled" and terminated["exitCode"] == 137
    assert hog["status"]["qosClass"] == "Burstable"


def test_missing_image_reports_pull_errors(agent_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, _node = agent_cluster
    # A registry on a loopback port nothing listens on: the pull fails at once, locally.
    cluster.kubectl("run", "ghost", "--image=127.0.0.1:1/nothing/here:v1", "--restart=Never")

    def pull_failed(pod: dict) -> bool:
        statuses = pod.get("status", {}).get("containerStatuses") or []
        reason = statuses[0]["state"].get("waiting", {}).get("reason") if statuses else None
        return reason in ("ErrImagePull", "ImagePullBackOff")

    wait_pod(cluster, "ghost", pull_failed, "ErrImagePull")
    image = "127.0.0.1:1/nothing/here:v1"

    def ghost_events() -> list[tuple[str, str, str]]:
        listed = cluster.kubectl_json("get", "events", "--field-selector", "involvedObject.name=ghost")["items"]
        return [(e["type"], e["reason"], e["message"]) for e in listed]

    # The kubelet's words: the failed pull, then the back-off, each with its "Error: <reason>".
    wanted = [("Normal", "Pulling", f'Pulling image "{image}"'),
              ("Warning", "Failed", "Error: ErrImagePull"),
              ("Normal", "BackOff", f'Back-off pulling image "{image}"'),
              ("Warning", "Failed", "Error: ImagePullBackOff")]
    deadline = time.monotonic() + 20
    while not all(w in ghost_events() for w in wanted) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert all(w in ghost_events() for w in wanted), ghost_events()
    assert any(e[:2] == ("Warning", "Failed") and e[2].startswith(f'Failed to pull image "{image}": ')
               for e in ghost_events())
    backing_off = wait_pod(cluster, "ghost", lambda p: (p["status"].get("containerStatuses") or [{}])[0]
                           .get("state", {}).get("waiting", {}).get("reason") == "ImagePullBackOff",
                           "ImagePullBackOff")
    waiting = backing_off["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting["message"] == f'Back-off pulling image "{image}"'
    # runAsNonRoot: refused for the root image user, allowed with a numeric non-root runAsUser.
    # With fsGroup, the non-root user may write to its emptyDir, and new files get the group.
    for name, context in (("rootless-refused", {"runAsNonRoot": True}),
                          ("rootless", {"runAsNonRoot": True, "runAsUser": 65534, "fsGroup": 2000})):
        cluster.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "securityContext": context,
                     "containers": [{"name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                                     "command": ["sh", "-c", "id -u; touch /data/f && stat -c %g /data/f"],
                                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                     "volumes": [{"name": "data", "emptyDir": {}}]}}))
    refused = wait_pod(cluster, "rootless-refused", lambda p: (p.get("status", {}).get("containerStatuses") or [{}])[0]
                       .get("state", {}).get("waiting", {}).get("reason") == "CreateContainerConfigError",
                       "CreateContainerConfigError")
    assert "image will run as root" in refused["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    wait_pod(cluster, "rootless", phase_is("Succeeded"), "Succeeded")
    assert cluster.kubectl("logs", "rootless").stdout == "65534\n2000\n"
    cluster.kubectl("run", "never", "--image=not-imported:v1", "--image-pull-policy=Never", "--restart=Never")
    wait_pod(cluster, "never", lambda p: (p.get("status", {}).get("containerStatuses") or [{}])[0]
             .get("state", {}).get("waiting", {}).get("reason") == "ErrImageNeverPull", "ErrImageNeverPull")


def test_attach_to_stdin_and_stdout(agent_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, _node = agent_cluster
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "echoer"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent", "stdin": True,
            "command": ["sh", "-c", "while read line; do echo got:$line; done"]}]},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    wait_pod(cluster, "echoer", phase_is("Running"), "Running")
    # kubectl attach -i through the API server: stdin in, the container's output back; with
    # stdinOnce the end of kubectl's input closes the container's stdin, so it exits.
    once = {**pod, "metadata": {"name": "once"}, "spec": {**pod["spec"], "restartPolicy": "Never"}}
    once["spec"]["containers"] = [{**pod["spec"]["containers"][0], "stdinOnce": True}]
    cluster.kubectl("apply", "-f", "-", input=json.dumps(once))
    wait_pod(cluster, "once", phase_is("Running"), "Running")
    attached = cluster.kubectl("attach", "-i", "once", "-c", "main", input="via-attach\n", timeout=30)
    assert "got:via-attach" in attached.stdout, attached
    wait_pod(cluster, "once", phase_is("Succeeded"), "Succeeded once its stdin closed")
    frames = kubelet_websocket(cluster, "/attach/default/echoer/main?stdin=1&stdout=1&stderr=1",
                               "v4.channel.k8s.io", send=[b"\x00hello\n", b"\x00again\n"],
                               done=lambda frames: b"got:again" in b"".join(frames))
    assert b"".join(f[1:] for f in frames if f[:1] == b"\x01") == b"got:hello\ngot:again\n"


def test_agent_command_rejects_bad_input_clearly(agent_cluster, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cluster, _node = agent_cluster
    base = [sys.executable, "-m", "k3py", "agent", "--data-dir", str(tmp_path / "agent")]
    plain = cluster.run([*base, "--server", "http://127.0.0.1:6443", "--token", "x"], check=False)
    assert plain.returncode == 2 and "must be an https:// URL" in plain.stderr
    wrong = cluster.run([*base, "--server", "https://127.0.0.1:6443", "--token", "wrong"], check=False)
    assert wrong.returncode == 1 and "refused the token" in wrong.stderr
    assert "Traceback" not in plain.stderr + wrong.stderr


def test_lifecycle_hooks_and_host_path(agent_cluster, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cluster, _node = agent_cluster
    shared = tmp_path / "hooks"
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hooked"},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"],
                "volumeMounts": [{"name": "shared", "mountPath": "/hooks"}],
                "lifecycle": {
                    "postStart": {"exec": {"command": ["sh", "-c", "echo started > /hooks/post"]}},
                    "preStop": {"exec": {"command": ["sh", "-c", "echo stopping > /hooks/pre"]}},
                },
            }],
            "volumes": [{"name": "shared", "hostPath": {"path": str(shared), "type": "DirectoryOrCreate"}}],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    wait_pod(cluster, "hooked", phase_is("Running"), "Running")
    assert (shared / "post").read_text() == "started\n"
    assert not (shared / "pre").exists()
    cluster.kubectl("delete", "pod", "hooked", "--wait=true", timeout=60)
    assert (shared / "pre").read_text() == "stopping\n"


def test_deployment_rolls_out_on_the_node(agent_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, _node = agent_cluster
    # kubectl create deployment has no pull-policy flag: the imported :latest image needs IfNotPresent
    # on this offline node, so the generated manifest gets it before it is applied.
    manifest = json.loads(cluster.kubectl("create", "deployment", "web-dep", "--image=busybox", "--replicas=2",
                                          "--dry-run=client", "-o", "json", "--", "sleep", "3600").stdout)
    manifest["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    cluster.kubectl("rollout", "status", "deployment/web-dep", "--timeout=60s", timeout=90)
    deployment = cluster.kubectl_json("get", "deployment", "web-dep")
    assert deployment["status"]["readyReplicas"] == 2 and deployment["status"]["availableReplicas"] == 2
    pods = cluster.kubectl_json("get", "pods", "-l", "app=web-dep")["items"]
    assert len({p["status"]["podIP"] for p in pods}) == 2


def test_helm_install_wait_on_the_node(agent_cluster, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cluster, _node = agent_cluster
    chart = tmp_path / "greeter"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: greeter\nversion: 0.1.0\n")
    (chart / "templates" / "all.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: greeting}\ndata: {text: hello-helm}\n---\n"
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: greeter}\n"
        "spec:\n  replicas: 1\n  selector: {matchLabels: {app: greeter}}\n"
        "  template:\n    metadata: {labels: {app: greeter}}\n    spec:\n      containers:\n"
        "      - name: main\n        image: busybox\n        imagePullPolicy: IfNotPresent\n        command: [sh, -c, 'echo $(cat /cfg/text); exec sleep 3600']\n"
        "        volumeMounts: [{name: cfg, mountPath: /cfg}]\n"
        "        readinessProbe: {exec: {command: [test, -s, /cfg/text]}, periodSeconds: 1}\n"
        "      volumes: [{name: cfg, configMap: {name: greeting}}]\n"
    )
    cluster.helm("install", "greeter", str(chart), "--wait", "--timeout", "60s")
    pod = cluster.kubectl_json("get", "pods", "-l", "app=greeter")["items"][0]
    assert cluster.kubectl("logs", pod["metadata"]["name"]).stdout == "hello-helm\n"
    cluster.helm("uninstall", "greeter", "--wait")


REGISTRY_PORT = 15000  # inside the test host's own network namespace


def _waiting_reason(pod: dict) -> str | None:
    statuses = pod.get("status", {}).get("containerStatuses") or [{}]
    return statuses[0].get("state", {}).get("waiting", {}).get("reason")


def _start_registry(cluster, directory: Path) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    """Debian's docker-registry on loopback of the test host (where the agent pulls from)."""
    config = directory / "registry.yml"
    config.write_text(json.dumps({
        "version": 0.1, "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(directory / "storage")}},
        "http": {"addr": f"127.0.0.1:{REGISTRY_PORT}"},
    }))
    process = subprocess.Popen(cluster.host.exec_argv(["docker-registry", "serve", str(config)]),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def serving() -> bool:
        import urllib.request

        try:
            urllib.request.urlopen(f"http://127.0.0.1:{REGISTRY_PORT}/v2/", timeout=1).close()
        except OSError:
            return False
        return True

    cluster.wait_for(lambda: cluster.in_netns(serving), timeout=15, interval=0.05, what="docker-registry up")
    return process


def _stop(process: subprocess.Popen[bytes]) -> None:
    import os
    import signal

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_pull_policy_always_asks_the_registry_at_every_start(agent_cluster, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.runtime.imagebuilder import Entry, busybox_layer, layer_tar, write_oci_archive

    cluster, _node = agent_cluster
    busybox = busybox_layer()
    archives = {}
    for version in ("v1", "v2"):
        archives[version] = tmp_path / f"box-{version}.tar"
        write_oci_archive(archives[version], [busybox, layer_tar([Entry("version", data=f"{version}\n".encode())])],
                          f"box:{version}")
    image = f"127.0.0.1:{REGISTRY_PORT}/tools/box:stable"

    def push(version: str) -> None:
        cluster.run(["skopeo", "copy", "--dest-tls-verify=false", "--retry-times", "0",
                     f"oci-archive:{archives[version]}", f"docker://{image}"], timeout=60)

    def run_pod(name: str, policy: str) -> None:
        cluster.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "main", "image": image, "imagePullPolicy": policy, "command": ["cat", "/version"]}]}}))

    registry = _start_registry(cluster, tmp_path)
    try:
        push("v1")
        run_pod("always-first", "Always")
        first = wait_pod(cluster, "always-first", phase_is("Succeeded"), "Succeeded")
        assert cluster.kubectl("logs", "always-first").stdout == "v1\n"
        # The tag moves to another image: IfNotPresent keeps using the one the node has, Always
        # asks the registry, sees the new digest and pulls it.
        push("v2")
        run_pod("if-not-present", "IfNotPresent")
        wait_pod(cluster, "if-not-present", phase_is("Succeeded"), "Succeeded")
        assert cluster.kubectl("logs", "if-not-present").stdout == "v1\n"
        run_pod("always-second", "Always")
        second = wait_pod(cluster, "always-second", phase_is("Succeeded"), "Succeeded")
        assert cluster.kubectl("logs", "always-second").stdout == "v2\n"
        assert second["status"]["containerStatuses"][0]["imageID"] != first["status"]["containerStatuses"][0]["imageID"]
        events = cluster.kubectl("get", "events", "--field-selector", "involvedObject.name=always-second").stdout
        assert "Pulling" in events and f'Successfully pulled image "{image}" in' in events
        assert "including waiting). Image size: " in events
    finally:
        _stop(registry)
    # The registry is gone: Always fails to start the container although the image is present.
    run_pod("always-offline", "Always")
    offline = wait_pod(cluster, "always-offline", lambda p: _waiting_reason(p) == "ErrImagePull",
                       "ErrImagePull with the registry unreachable")
    message = offline["status"]["containerStatuses"][0]["state"]["waiting"].get("message", "")
    assert "cannot reach registry" in message, message
    # Then, until the next try, the back-off users know from kubectl get pods.
    backing_off = wait_pod(cluster, "always-offline", lambda p: _waiting_reason(p) == "ImagePullBackOff",
                           "ImagePullBackOff after the failed pull", timeout=10)
    assert backing_off["status"]["containerStatuses"][0]["state"]["waiting"]["message"] == \
        f'Back-off pulling image "{image}"'
    assert "ImagePullBackOff" in cluster.kubectl("get", "pod", "always-offline").stdout
    events = cluster.kubectl("get", "events", "--field-selector", "involvedObject.name=always-offline").stdout
    assert "cannot reach registry" in events and "Back-off pulling image" in events, events
    cluster.kubectl("delete", "pod", "always-first", "if-not-present", "always-second", "always-offline",
                    "--wait=false")


def test_startup_probe_gates_liveness_and_post_start_failures_kill(agent_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, _node = agent_cluster

    def pod(name: str, restart: str, **container: object) -> dict:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"restartPolicy": restart, "terminationGracePeriodSeconds": 1, "containers": [{
                    "name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent", **container}]}}

    started_marker = ["test", "-f", "/tmp/started"]
    pods = [
        # Liveness alone would kill this container within a second; the startup probe holds it off.
        pod("slow-start", "Always", command=["sh", "-c", "sleep 3; touch /tmp/started; exec sleep 3600"],
            startupProbe={"exec": {"command": started_marker}, "periodSeconds": 1, "failureThreshold": 30},
            livenessProbe={"exec": {"command": started_marker}, "periodSeconds": 1, "failureThreshold": 1}),
        # Stopped like any container: its preStop hook, then SIGTERM (which it answers).
        pod("hook-fails-once", "Never",
            command=["sh", "-c", "trap 'echo got TERM; exit 7' TERM; while true; do sleep 0.1; done"],
            lifecycle={"postStart": {"exec": {"command": ["sh", "-c", "exit 3"]}},
                       "preStop": {"exec": {"command": ["sh", "-c", "echo pre-stop > /proc/1/fd/1"]}}}),
        pod("hook-fails-always", "Always", command=["sleep", "3600"],
            lifecycle={"postStart": {"exec": {"command": ["sh", "-c", "exit 3"]}}}),
    ]
    for manifest in pods:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))

    def container(pod: dict) -> dict:
        return (pod.get("status", {}).get("containerStatuses") or [{}])[0]

    early = wait_pod(cluster, "slow-start", lambda p: "running" in container(p).get("state", {}), "running")
    assert container(early)["started"] is False and container(early)["ready"] is False
    ready = wait_pod(cluster, "slow-start", lambda p: container(p).get("ready") is True, "started and ready")
    assert container(ready)["started"] is True and container(ready)["restartCount"] == 0
    # A failing postStart hook kills the container; restartPolicy decides what follows.
    failed = wait_pod(cluster, "hook-fails-once", phase_is("Failed"), "Failed by its postStart hook")
    terminated = container(failed)["state"]["terminated"]
    assert terminated["exitCode"] == 7 and terminated["reason"] == "Error"
    assert cluster.kubectl("logs", "hook-fails-once").stdout == "pre-stop\ngot TERM\n"
    events = cluster.kubectl("get", "events", "--field-selector", "involvedObject.name=hook-fails-once").stdout
    assert "FailedPostStartHook" in events
    wait_pod(cluster, "hook-fails-always", lambda p: container(p).get("restartCount", 0) >= 1,
             "a restart after the postStart hook failed", timeout=30)
    assert container(cluster.kubectl_json("get", "pod", "slow-start"))["restartCount"] == 0
    cluster.kubectl("delete", "pod", "slow-start", "hook-fails-once", "hook-fails-always", "--wait=false")


def test_environment_sources_and_config_errors_on_the_node(agent_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, _node = agent_cluster
    cluster.kubectl("create", "secret", "generic", "env-creds", "--from-literal=token=t0k")
    cluster.kubectl("create", "configmap", "env-settings", "--from-literal=mode=fast")
    cluster.kubectl("create", "service", "clusterip", "env-db", "--tcp=5432:5432")

    def pod(name: str, env: list[dict], command: str = "true") -> dict:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"restartPolicy": "Never", "containers": [{
                    "name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                    "command": ["sh", "-c", command], "args": ["$(MODE_TEXT)", "$$(MODE_TEXT)"],
                    "env": env, "envFrom": [{"configMapRef": {"name": "env-settings"}, "prefix": "CFG_"}],
                    "resources": {"requests": {"memory": "16Mi"}, "limits": {"memory": "32Mi"}}}]}}

    script = ('echo "$0|$1|$CFG_mode|$TOKEN|${OPTIONAL-unset}|$MEM_MI|$ENV_DB_SERVICE_PORT|$PRICE"')
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod("env-ok", [
        {"name": "MODE_TEXT", "value": "mode=$(CFG_mode)"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "env-creds", "key": "token"}}},
        {"name": "OPTIONAL", "valueFrom": {"secretKeyRef": {"name": "env-creds", "key": "nope", "optional": True}}},
        {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory", "divisor": "1Mi"}}},
        {"name": "PRICE", "value": "$$5"},
    ], script)))
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod("env-missing-key", [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "env-creds", "key": "nope"}}}])))
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod("env-missing-secret", [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "env-absent", "key": "token"}}}])))
    wait_pod(cluster, "env-ok", phase_is("Succeeded"), "Succeeded")
    assert cluster.kubectl("logs", "env-ok").stdout == "mode=fast|$(MODE_TEXT)|fast|t0k|unset|16|5432|$5\n"
    for name, message in (("env-missing-key", "couldn't find key nope in Secret default/env-creds"),
                          ("env-missing-secret", 'secret "env-absent" not found')):
        waiting = wait_pod(cluster, name, lambda p: _waiting_reason(p) == "CreateContainerConfigError",
                           "CreateContainerConfigError")["status"]["containerStatuses"][0]["state"]["waiting"]
        assert waiting["message"] == message
    # The secret appears: the kubelet's retry starts the container.
    cluster.kubectl("create", "secret", "generic", "env-absent", "--from-literal=token=late")
    wait_pod(cluster, "env-missing-secret", phase_is("Succeeded"), "Succeeded once its secret exists")
    cluster.kubectl("delete", "pod", "env-ok", "env-missing-key", "env-missing-secret", "--wait=false")


def test_exec_over_v5_spdy_and_terminal_resize_on_the_node(agent_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, _node = agent_cluster
    cluster.kubectl("run", "streamer", "--image=busybox", "--image-pull-policy=IfNotPresent", "--",
                    "sleep", "3600")
    wait_pod(cluster, "streamer", phase_is("Running"), "Running")

    def channel(frames: list[bytes], number: int) -> bytes:
        return b"".join(f[1:] for f in frames if f[:1] == bytes([number]))

    # v5.channel.k8s.io: stdin, then the close frame (255, channel 0) ends the command's input.
    query = "&".join(["command=sh", "command=-c", "command=cat%3B echo done >%262%3B exit 4",
                      "stdin=1", "stdout=1", "stderr=1"])
    frames = kubelet_websocket(cluster, f"/exec/default/streamer/streamer?{query}", "v5.channel.k8s.io",
                               send=[b"\x00hello v5\n", b"\xff\x00"])
    assert channel(frames, 1) == b"hello v5\n" and channel(frames, 2) == b"done\n"
    status = json.loads(channel(frames, 3))
    assert status["reason"] == "NonZeroExitCode" and status["details"]["causes"][0]["message"] == "4"
    # A terminal gets the size sent on the resize channel (4); the shell waits until it has one.
    # (busybox stty fails on a 0x0 terminal, so "has a size" is: stty prints something not 0 0)
    script = 'until stty size 2>/dev/null | grep -qv "^0 0$"; do sleep 0.05; done; stty size'
    query = "&".join(["command=sh", "command=-c", f"command={urllib.parse.quote(script)}",
                      "stdin=1", "stdout=1", "tty=1"])
    frames = kubelet_websocket(cluster, f"/exec/default/streamer/streamer?{query}", "v5.channel.k8s.io",
                               send=[b'\x04{"Width":91,"Height":27}'])
    assert channel(frames, 1).strip() == b"27 91", frames
    # Through the API server with a kubectl that speaks SPDY only (1.27), and with one that
    # speaks WebSockets (1.33): output, stdin and exit codes either way.
    for version in ("1.27", "1.33"):
        result = cluster.kubectl("exec", "-i", "streamer", "--", "sh", "-c", "cat; exit 6",
                                 version=version, input=f"via {version}\n", check=False)
        assert (result.stdout, result.returncode) == (f"via {version}\n", 6), result
    cluster.kubectl("delete", "pod", "streamer", "--grace-period=1", "--wait=false")


def test_sigkilled_agent_leaves_pods_running_and_adopts_them(agent_cluster) -> None:  # type: ignore[no-untyped-def]
    import os
    import signal

    cluster, node = agent_cluster
    cluster.kubectl("run", "kill-survivor", "--image=busybox", "--image-pull-policy=IfNotPresent", "--",
                    "sleep", "3600")
    cluster.kubectl("run", "quits-while-away", "--image=busybox", "--image-pull-policy=IfNotPresent",
                    "--restart=Never", "--", "sh", "-c", "while [ ! -e /tmp/quit ]; do sleep 0.1; done; exit 3")
    before = wait_pod(cluster, "kill-survivor", phase_is("Running"), "Running")["status"]
    quitter = wait_pod(cluster, "quits-while-away", phase_is("Running"), "Running")["status"][
        "containerStatuses"][0]["containerID"].removeprefix("k3py://")
    assert node.process is not None
    killed_at = datetime.now(UTC)
    os.kill(node.process.pid, signal.SIGKILL)  # no chance to clean up anything
    node.process.wait(timeout=10)
    node.process = None
    # While no agent runs, a container exits: the agent that comes back must report it.
    from k3py.runtime.containers import ContainerRuntime

    assert ContainerRuntime(node.data_dir / "runtime").exec_sync(quitter, ["touch", "/tmp/quit"]).exit_code == 0
    node.start()

    def lease_renewed_since_the_kill() -> bool:
        lease = cluster.kubectl_json("get", "lease", NODE, "-n", "kube-node-lease")
        return datetime.fromisoformat(lease["spec"]["renewTime"]) > killed_at

    # The Node still says Ready from before the kill: the restarted agent shows itself by its Lease.
    cluster.wait_for(lease_renewed_since_the_kill, timeout=30, interval=0.2, what="the new agent's Lease renewal")
    # The adopted pod is served again: exec reaches the same container.
    cluster.wait_for(lambda: cluster.kubectl("exec", "kill-survivor", "--", "echo", "alive", check=False).stdout
                     == "alive\n", timeout=30, interval=0.2, what="exec into the adopted pod")
    after = wait_pod(cluster, "kill-survivor", phase_is("Running"), "Running")["status"]
    (container,) = after["containerStatuses"]
    assert container["containerID"] == before["containerStatuses"][0]["containerID"]
    assert container["restartCount"] == 0 and "running" in container["state"]
    assert after["podIP"] == before["podIP"]
    quit_status = wait_pod(cluster, "quits-while-away", phase_is("Failed"), "Failed with its exit code")["status"]
    terminated = quit_status["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")
    cluster.kubectl("delete", "pod", "kill-survivor", "quits-while-away", "--grace-period=1", "--wait=true",
                    timeout=60)


def _cgroup_value(group, controller: str, v1_file: str, v2_file: str) -> str:  # type: ignore[no-untyped-def]
    return Path(group.dirs["" if group.v2 else controller], v2_file if group.v2 else v1_file).read_text().strip()


def test_qos_classes_place_pods_in_their_cgroups(agent_cluster) -> None:  # type: ignore[no-untyped-def]
    from k3py.api.quantity import parse_quantity
    from k3py.runtime.cgroups import Cgroup
    from k3py.runtime.containers import default_cgroup_parent

    cluster, node = agent_cluster
    top = default_cgroup_parent(node.data_dir / "runtime")  # the agent's data dir owns it
    classes = {
        "qos-guaranteed": {"limits": {"cpu": "250m", "memory": "48Mi"}},
        "qos-burstable": {"requests": {"memory": "1Gi", "cpu": "300m"}},
        "qos-besteffort": {},
    }
    for name, resources in classes.items():
        cluster.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"], "resources": resources}]}}))
    pods = {name: wait_pod(cluster, name, phase_is("Running"), "Running") for name in classes}
    memory = int(parse_quantity(cluster.kubectl_json("get", "node", NODE)["status"]["capacity"]["memory"]))
    # Some hosts (sandboxed VMs) keep any process at 0 or above whatever root writes: ask this one.
    probe = subprocess.run([sys.executable, "-c", "open('/proc/self/oom_score_adj', 'w').write('-997');"
                            "print(open('/proc/self/oom_score_adj').read().strip())"],
                           capture_output=True, text=True, check=True)
    lowest = int(probe.stdout)
    expected = {  # the pod's group below the runtime's, its QoS class, the container's oom_score_adj
        "qos-guaranteed": ("kubepods", "Guaranteed", lowest),
        "qos-burstable": ("kubepods/burstable", "Burstable", min(999, max(3, 1000 - (1000 * (1 << 30)) // memory))),
        "qos-besteffort": ("kubepods/besteffort", "BestEffort", 1000),
    }
    groups = {}
    for name, (parent, qos, oom) in expected.items():
        pod = pods[name]
        assert pod["status"]["qosClass"] == qos
        groups[name] = Cgroup(f"{top}/{parent}", f"pod{pod['metadata']['uid']}")
        cid = pod["status"]["containerStatuses"][0]["containerID"].removeprefix("k3py://")
        container_group = Cgroup(groups[name].relative, cid)
        procs = _cgroup_value(container_group, "memory", "cgroup.procs", "cgroup.procs").split()
        assert procs, f"{name}: no process in {container_group.relative}"
        assert cluster.kubectl("exec", name, "--", "cat", "/proc/1/oom_score_adj").stdout.strip() == str(oom)
    guaranteed = groups["qos-guaranteed"]
    assert _cgroup_value(guaranteed, "memory", "memory.limit_in_bytes", "memory.max") == str(48 << 20)
    if guaranteed.v2:
        assert _cgroup_value(guaranteed, "cpu", "", "cpu.max").split()[0] == "25000"
    else:
        assert _cgroup_value(guaranteed, "cpu", "cpu.cfs_quota_us", "") == "25000"
        assert _cgroup_value(guaranteed, "cpu", "cpu.shares", "") == "256"
        # BestEffort pods share the smallest CPU weight, whatever their number. (The Burstable
        # group's weight is the sum of requests of the node's Burstable pods: the unit tests check
        # it.)
        assert _cgroup_value(Cgroup(f"{top}/kubepods", "besteffort"), "cpu", "cpu.shares", "") == "2"
        assert _cgroup_value(groups["qos-burstable"], "cpu", "cpu.shares", "") == "307"
        assert _cgroup_value(groups["qos-burstable"], "memory", "memory.limit_in_bytes", "") == \
            _cgroup_value(Cgroup(top, "kubepods"), "memory", "memory.limit_in_bytes", "")  # unbounded
    cluster.kubectl("delete", "pod", *classes, "--wait=true", timeout=60)
    for name, group in groups.items():
        assert not group.exists(), f"{name}: {group.relative} left behind"


def test_log_options_since_time_since_seconds_limit_bytes_and_container(agent_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, _node = agent_cluster
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "chatty"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [
            {"name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent",
             "command": ["sh", "-c", "echo early; sleep 1.2; echo late; exec sleep 3600"]},
            {"name": "side", "image": "busybox", "imagePullPolicy": "IfNotPresent",
             "command": ["sh", "-c", "echo from-side; exec sleep 3600"]}]}}))
    wait_pod(cluster, "chatty", phase_is("Running"), "Running")
    stamped = cluster.wait_for(
        lambda: (out := cluster.kubectl("logs", "chatty", "-c", "main", "--timestamps", check=False).stdout)
        .count("\n") == 2 and out, timeout=20, what="both lines logged")
    late_stamp = stamped.splitlines()[1].split(" ")[0]
    # sinceTime travels with second precision: "early" is at least 1.2 s before that second.
    since = datetime.fromisoformat(late_stamp[:19] + "+00:00").strftime("%Y-%m-%dT%H:%M:%SZ")
    assert cluster.kubectl("logs", "chatty", "-c", "main", f"--since-time={since}").stdout == "late\n"
    assert cluster.kubectl("logs", "chatty", "-c", "main", "--since=1h").stdout == "early\nlate\n"
    assert cluster.kubectl("logs", "chatty", "-c", "main", "--limit-bytes=3").stdout == "ear"
    assert cluster.kubectl("logs", "chatty", "-c", "main", "--tail=1").stdout == "late\n"
    assert cluster.kubectl("logs", "chatty", "-c", "side").stdout == "from-side\n"
    code, body = kubelet_get(cluster, "/containerLogs/default/chatty/main?sinceTime=garbage")
    assert code == 400 and b"sinceTime must be an RFC 3339 time" in body
    cluster.kubectl("delete", "pod", "chatty", "--wait=false")


def test_node_lease_is_renewed_every_ten_seconds(agent_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, _node = agent_cluster

    def renew_time() -> datetime:
        lease = cluster.kubectl_json("get", "lease", NODE, "-n", "kube-node-lease")
        assert lease["spec"]["leaseDurationSeconds"] == 40 and lease["spec"]["holderIdentity"] == NODE
        return datetime.fromisoformat(lease["spec"]["renewTime"])

    # The renewal seen first and the next one are consecutive: their distance is the period.
    first = renew_time()
    second = cluster.wait_for(lambda: (t := renew_time()) > first and t, timeout=15, interval=0.2,
                              what="a Lease renewal")
    assert 9 <= (second - first).total_seconds() <= 11.5, (first, second)


def test_init_containers_in_order_on_failure_restarts_and_probe_timeouts(agent_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, _node = agent_cluster

    def box(name: str, script: str, **extra: object) -> dict:
        return {"name": name, "image": "busybox", "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", script], "volumeMounts": [{"name": "data", "mountPath": "/data"}], **extra}

    def pod(name: str, restart: str, containers: list[dict], inits: list[dict] | None = None) -> dict:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"restartPolicy": restart, "terminationGracePeriodSeconds": 1,
                         "initContainers": inits or [], "containers": containers,
                         "volumes": [{"name": "data", "emptyDir": {}}]}}

    for manifest in (
        pod("inits-in-order", "Never", [box("main", "cat /data/order")],
            [box("first", "echo one >> /data/order"), box("second", "echo two >> /data/order")]),
        # Fails on its first run, succeeds on the second (the emptyDir outlives the container).
        pod("on-failure", "OnFailure", [box("main", "[ -e /data/ran ] && exit 0; touch /data/ran; exit 1")]),
        # The probe command takes longer than its timeoutSeconds: every try fails.
        pod("slow-probe", "Always", [box("main", "exec sleep 3600", readinessProbe={
            "exec": {"command": ["sleep", "5"]}, "timeoutSeconds": 1, "periodSeconds": 1})]),
    ):
        cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    ordered = wait_pod(cluster, "inits-in-order", phase_is("Succeeded"), "Succeeded")
    assert [s["state"]["terminated"]["reason"] for s in ordered["status"]["initContainerStatuses"]] == \
        ["Completed", "Completed"]
    assert cluster.kubectl("logs", "inits-in-order").stdout == "one\ntwo\n"
    recovered = wait_pod(cluster, "on-failure", phase_is("Succeeded"), "Succeeded after one restart", timeout=30)
    (status,) = recovered["status"]["containerStatuses"]
    assert status["restartCount"] == 1 and status["lastState"]["terminated"]["exitCode"] == 1

    def timed_out() -> str | None:
        events = cluster.kubectl("get", "events", "--field-selector", "involvedObject.name=slow-probe").stdout
        return events if "Readiness probe failed" in events and "timed out" in events else None

    cluster.wait_for(timed_out, timeout=20, interval=0.5, what="a readiness probe timing out")
    slow = cluster.kubectl_json("get", "pod", "slow-probe")["status"]
    assert slow["containerStatuses"][0]["ready"] is False and slow["phase"] == "Running"
    cluster.kubectl("delete", "pod", "inits-in-order", "on-failure", "slow-probe", "--wait=false")
