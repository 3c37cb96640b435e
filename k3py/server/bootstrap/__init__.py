"""First-start bootstrap of a server: cluster CA, certificates, join token, admin kubeconfig."""
