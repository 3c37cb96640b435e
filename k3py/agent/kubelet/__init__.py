"""The kubelet: runs the Pods bound to this node on the container runtime and reports them.

    node        Node registration (capacity, addresses, labels, conditions) and the Lease heartbeat
    podspec     pure Pod-spec semantics: env resolution, $(VAR) expansion, QoS class, cgroup
                resources, restart back-off
    volumes     per-pod volume directories (emptyDir, hostPath, configMap, secret, downwardAPI,
                projected) and the /etc/hosts, /etc/hostname, /etc/resolv.conf files
    status      the Pod status (phase, conditions, containerStatuses) computed from runtime state
    probes      exec / httpGet / tcpSocket startup, liveness and readiness probes
    pullsecrets registry credentials from imagePullSecrets
    pods        the pod manager: informer on this node's pods, one worker per pod at a time,
                a PLEG-style relist of the runtime that notices container exits
    streaming   the StreamingBackend (logs, exec, attach, port-forward) over the runtime

Everything the kubelet knows about running pods is recoverable from the runtime (container
labels carry the pod's uid, namespace, name, container name and restart attempt; sandbox names
carry the pod uid), so restarting k3py leaves pods running and their status accurate.
"""
