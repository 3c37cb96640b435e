"""Real pods on a real node: ``k3py agent`` joined to a server, driven by kubectl."""

from __future__ import annotations

import json
import subprocess
import sys
import time
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
    types = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert types == {"MemoryPressure": "False", "DiskPressure": "False", "PIDPressure": "False", "Ready": "True"}
    (image,) = node["status"]["images"]
    assert "docker.io/library/busybox:latest" in image["names"] and image["sizeBytes"] > 0
    lease = cluster.kubectl_json("get", "lease", NODE, "-n", "kube-node-lease")
    assert lease["spec"]["holderIdentity"] == NODE


def test_kubectl_run_busybox_runs_with_pod_ip(agent_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, _node = agent_cluster
    cluster.kubectl("run", "sleeper", "--image=busybox", "--restart=Never", "--", "sleep", "3600")
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
    cluster.kubectl("run", "oneshot", "--image=busybox", "--restart=Never", "--", "sh", "-c", "echo hello from oneshot")
    pod = wait_pod(cluster, "oneshot", phase_is("Succeeded"), "Succeeded")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
    assert "Completed" in cluster.kubectl("get", "pod", "oneshot").stdout


def test_failing_pod_goes_into_crash_loop(agent_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, _node = agent_cluster
    cluster.kubectl("run", "crasher", "--image=busybox", "--", "sh", "-c", "echo boom; exit 3")

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
                "name": "main", "image": "busybox",
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
                 "containers": [{"name": "main", "image": "busybox", "command": ["cat", "/proc/net/dev"]}]},
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
    cluster.kubectl("run", "talker", "--image=busybox", "--restart=Never", "--",
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
            "containers": [{"name": "main", "image": "busybox",
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
        "spec": {"containers": [{"name": "main", "image": "busybox",
                                 "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]}]},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    wait_pod(cluster, "polite", phase_is("Running"), "Running")
    started = time.monotonic()
    cluster.kubectl("delete", "pod", "polite", "--wait=true", timeout=60)
    assert time.monotonic() - started < 10  # far below the 30 s grace period: SIGTERM ended it


def test_agent_restart_keeps_pods_running(agent_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, node = agent_cluster
    cluster.kubectl("run", "survivor", "--image=busybox", "--", "sleep", "3600")
    watched = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "watched"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "main", "image": "busybox", "command": ["sleep", "3600"],
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
    cluster.kubectl("run", "newcomer", "--image=busybox", "--", "sleep", "3600")
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
    cluster.kubectl("run", "execme", "--image=busybox", "--", "sleep", "3600")
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
    cluster, _node = agent_cluster
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
        "spec": {
            "initContainers": [{"name": "prepare", "image": "busybox",
                                "command": ["sh", "-c", "echo served-page > /www/index.html"],
                                "volumeMounts": [{"name": "www", "mountPath": "/www"}]}],
            "containers": [{
                "name": "httpd", "image": "busybox",
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

    cgroup = Cgroup("k3py", status["containerStatuses"][0]["containerID"].removeprefix("k3py://"))
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
    # Real kubectl port-forward through the API server.
    assert cluster.host is not None
    forward = subprocess.Popen(
        cluster.host.exec_argv([find_kubectl(), "--kubeconfig", str(cluster.kubeconfig),
                                "--cache-dir", str(cluster.cache_dir / "default"),
                                "port-forward", "pod/web", "18090:8080"]),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert forward.stdout is not None
        first = forward.stdout.readline()
        assert "Forwarding from 127.0.0.1:18090" in first, first

        def via_forward() -> bytes:
            import http.client

            conn = http.client.HTTPConnection("127.0.0.1", 18090, timeout=10)
            try:
                conn.request("GET", "/index.html")
                return conn.getresponse().read()
            finally:
                conn.close()

        assert cluster.in_netns(via_forward) == b"served-page\n"
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
             "name": "main", "image": "busybox", "command": ["sleep", "3600"],
             "livenessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 1}}]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hog"},
         "spec": {"restartPolicy": "Never", "containers": [{
             "name": "main", "image": "busybox",
             "command": ["sh", "-c", "head -c 200m /dev/zero | tail"],
             "resources": {"limits": {"memory": "32Mi"}}}]}},
    ]
    pods += [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
         "spec": {"restartPolicy": "Never", "containers": [{
             "name": "main", "image": "busybox", "command": ["sh", "-c", script],
             "terminationMessagePolicy": policy}]}}
        for name, script, policy in (
            ("lastwords", "echo goodbye > /dev/termination-log; exit 2", "File"),
            ("fallback", "echo from the log; exit 1", "FallbackToLogsOnError"),
        )
    ]
    pods.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "deadline"},
                 "spec": {"activeDeadlineSeconds": 2, "terminationGracePeriodSeconds": 1,
                          "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]}})
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
    events = cluster.kubectl("get", "events", "--field-selector", "involvedObject.name=ghost").stdout
    assert "Pulling" in events and "Failed" in events
    # runAsNonRoot: refused for the root image user, allowed with a numeric non-root runAsUser.
    # With fsGroup, the non-root user may write to its emptyDir, and new files get the group.
    for name, context in (("rootless-refused", {"runAsNonRoot": True}),
                          ("rootless", {"runAsNonRoot": True, "runAsUser": 65534, "fsGroup": 2000})):
        cluster.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "securityContext": context,
                     "containers": [{"name": "main", "image": "busybox",
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
            "name": "main", "image": "busybox", "stdin": True,
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
                "name": "main", "image": "busybox",
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
    cluster.kubectl("create", "deployment", "web-dep", "--image=busybox", "--replicas=2", "--",
                    "sleep", "3600")
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
        "      - name: main\n        image: busybox\n        command: [sh, -c, 'echo $(cat /cfg/text); exec sleep 3600']\n"
        "        volumeMounts: [{name: cfg, mountPath: /cfg}]\n"
        "        readinessProbe: {exec: {command: [test, -s, /cfg/text]}, periodSeconds: 1}\n"
        "      volumes: [{name: cfg, configMap: {name: greeting}}]\n"
    )
    cluster.helm("install", "greeter", str(chart), "--wait", "--timeout", "60s")
    pod = cluster.kubectl_json("get", "pods", "-l", "app=greeter")["items"][0]
    assert cluster.kubectl("logs", pod["metadata"]["name"]).stdout == "hello-helm\n"
    cluster.helm("uninstall", "greeter", "--wait")
