"""The kubelet: runs the Pods bound to this node on the container runtime and reports them.

    node          Node registration (capacity, addresses, labels, conditions) and the Lease heartbeat
    pods          the pod manager: a controller over this node's pods (one worker per pod at a
                  time) whose level-triggered sync starts, restarts and stops their containers
    containerspec the pure translation of a pod's container into the runtime's ContainerSpec
                  (and of the pod into its SandboxSpec)
    podspec       pure Pod-spec rules: env resolution, $(VAR) expansion, QoS class, cgroup
                  resources, seccomp profile, active deadline
    images        the image manager: pull policy, pull secrets, pull back-off, imageID
    pullsecrets   registry credentials from imagePullSecrets
    podruntime    the runtime as the kubelet uses it: thread pool, per-pod index of containers
                  and sandboxes, the PLEG relist, pod cgroups
    podinputs     the API objects a pod's start reads (ConfigMaps, Secrets, claims, PVs)
    podrecord     what the kubelet knows of a pod beyond the runtime
    volumes       per-pod volume directories (emptyDir, hostPath, configMap, secret, downwardAPI,
                  projected), container mounts, and the /etc/hosts, /etc/hostname,
                  /etc/resolv.conf files
    termination   stopping containers (preStop, SIGTERM, SIGKILL) and taking pods apart
    hooks         postStart and preStop lifecycle hooks
    backoff       CrashLoopBackOff
    status        the Pod status (phase, conditions, containerStatuses) from runtime state (pure)
    statuswriter  gathers each pod's container views and writes its status when it changed
    probes        exec / httpGet / tcpSocket startup, liveness and readiness probes
    streaming     the StreamingBackend (logs, exec, attach, port-forward) over the runtime
    fdio          non-blocking pipe/pty reads and writes for exec and attach
    servingcert   the streaming server's serving certificate from the cluster's signer

Everything the kubelet knows about running pods is recoverable from the runtime (container
labels carry the pod's uid, namespace, name, container name and restart attempt; sandbox names
carry the pod uid), so restarting k3py leaves pods running and their status accurate.
"""
