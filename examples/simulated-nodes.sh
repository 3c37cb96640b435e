#!/usr/bin/env bash
# A k3py server with 100 simulated nodes and no real kubelet: controllers, the scheduler and
# Helm charts at scale without containers. Then, in another shell:
#   export KUBECONFIG=/tmp/k3py-sim/kubeconfig.yaml
#   kubectl get nodes; kubectl create deployment web --image=nginx --replicas=300
set -euo pipefail
exec k3py server --data-dir /tmp/k3py-sim/server --write-kubeconfig /tmp/k3py-sim/kubeconfig.yaml \
  --disable-agent --simulated-nodes 100 "$@"
