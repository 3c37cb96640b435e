"""The node's resolv.conf (which file, which upstreams) and each pod's /etc/resolv.conf for
every dnsPolicy, as upstream's kubelet writes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from k3py.agent.dns import resolvconf
from k3py.agent.dns.resolvconf import choose_resolv_conf, parse_resolv_conf, upstream_servers
from k3py.agent.kubelet.volumes import PodDNS, PodVolumes, configure_pod_dns, render_resolv_conf

HOST = """# the node's
nameserver 192.0.2.53
nameserver 127.0.0.53
search corp.example  lab.example.
options edns0 timeout:2
nameserver 10.43.0.10
"""


def pod(policy: str | None = None, namespace: str = "shop", **spec: object) -> dict:
    body: dict = {"containers": [{"name": "c"}], **spec}
    if policy:
        body["dnsPolicy"] = policy
    return {"metadata": {"name": "p", "namespace": namespace}, "spec": body}


def test_parsing_follows_the_kubelet() -> None:
    conf = parse_resolv_conf(HOST + "search last.example\n; a comment\nnameserver\n")
    assert conf.nameservers == ("192.0.2.53", "127.0.0.53", "10.43.0.10")
    assert conf.searches == ("last.example",)  # the last search line wins
    assert conf.options == ("edns0", "timeout:2")


def test_upstreams_never_include_loopback_or_the_cluster_dns_itself() -> None:
    conf = parse_resolv_conf(HOST + "nameserver ::1\nnameserver 2001:db8::53\nnameserver bogus\nnameserver 192.0.2.53\n")
    assert upstream_servers(conf, ["10.43.0.10"]) == ["192.0.2.53", "2001:db8::53"]


def test_a_loopback_only_host_file_falls_back_to_systemd_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host, systemd = tmp_path / "resolv.conf", tmp_path / "systemd-resolv.conf"
    host.write_text("nameserver 127.0.0.53\noptions edns0\n")
    monkeypatch.setattr(resolvconf, "HOST_RESOLV_CONF", host)
    monkeypatch.setattr(resolvconf, "SYSTEMD_RESOLV_CONF", systemd)
    assert choose_resolv_conf() == host  # nothing better exists
    systemd.write_text("nameserver 192.0.2.1\n")
    assert choose_resolv_conf() == systemd
    host.write_text("nameserver 192.0.2.2\n")
    assert choose_resolv_conf() == host
    given = tmp_path / "given.conf"
    assert choose_resolv_conf(str(given)) == given  # --resolv-conf wins, as given


@pytest.mark.parametrize(("the_pod", "expected"), [
    (pod(), "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\n"
            "nameserver 10.43.0.10\noptions ndots:5\n"),
    (pod("ClusterFirst", hostNetwork=True), "search corp.example lab.example\nnameserver 192.0.2.53\n"
                                            "nameserver 127.0.0.53\nnameserver 10.43.0.10\noptions edns0 timeout:2\n"),
    (pod("ClusterFirstWithHostNet", hostNetwork=True),
     "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\n"
     "nameserver 10.43.0.10\noptions ndots:5\n"),
    (pod("Default"), "search corp.example lab.example\nnameserver 192.0.2.53\nnameserver 127.0.0.53\n"
                     "nameserver 10.43.0.10\noptions edns0 timeout:2\n"),
    (pod("None", dnsConfig={"nameservers": ["192.0.2.9"], "searches": ["a.example"],
                            "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}),
     "search a.example\nnameserver 192.0.2.9\noptions ndots:2 edns0\n"),
    (pod("ClusterFirst", dnsConfig={"nameservers": ["192.0.2.9", "10.43.0.10"], "searches": ["cluster.local", "x.example"],
                                    "options": [{"name": "ndots", "value": "1"}, {"name": "single-request"}]}),
     "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example x.example\n"
     "nameserver 10.43.0.10\nnameserver 192.0.2.9\noptions ndots:1 single-request\n"),
    (pod("None"), ""),
], ids=["cluster-first", "cluster-first-host-network", "cluster-first-with-host-net", "default", "none",
        "dns-config-merged", "none-without-config"])
def test_pod_resolv_conf_per_dns_policy(the_pod: dict, expected: str) -> None:
    assert render_resolv_conf(the_pod, HOST) == expected


def test_pod_resolv_conf_limits_and_node_settings() -> None:
    many = pod("None", dnsConfig={"nameservers": [f"192.0.2.{i}" for i in range(1, 6)],
                                  "searches": [f"s{i}.example" for i in range(40)] + ["x" * 254]})
    text = render_resolv_conf(many)
    assert text.count("nameserver") == 3
    assert len(text.splitlines()[0].split()) - 1 == 32
    settings = PodDNS(cluster_dns=("10.43.0.53",), cluster_domain="k3py.test")
    assert render_resolv_conf(pod(), "", settings) == (
        "search shop.svc.k3py.test svc.k3py.test k3py.test\nnameserver 10.43.0.53\noptions ndots:5\n")
    # a kubelet without a cluster DNS address gives ClusterFirst pods the node's file (upstream's fallback)
    assert render_resolv_conf(pod(), "nameserver 192.0.2.53\n", PodDNS(cluster_dns=())) == "nameserver 192.0.2.53\n"


def test_the_node_agent_settings_reach_the_pods_files(tmp_path: Path) -> None:
    node_conf = tmp_path / "node-resolv.conf"
    node_conf.write_text("nameserver 192.0.2.77\nsearch node.example\n")
    pods_dir = tmp_path / "pods"
    configure_pod_dns(pods_dir, PodDNS(cluster_dns=("10.43.0.10",), cluster_domain="k3py.test",
                                       resolv_conf=str(node_conf)))
    volumes = PodVolumes(pods_dir / "uid-1")
    volumes.prepare(pod(hostname="web-0", subdomain="web"), pod_ip="10.42.0.9", config_maps={}, secrets={})
    assert (volumes.etc_dir / "resolv.conf").read_text() == (
        "search shop.svc.k3py.test svc.k3py.test k3py.test node.example\nnameserver 10.43.0.10\noptions ndots:5\n")
    assert "10.42.0.9\tweb-0.web.shop.svc.k3py.test\tweb-0" in (volumes.etc_dir / "hosts").read_text()
    PodVolumes(pods_dir / "uid-2").prepare(pod("Default"), pod_ip="10.42.0.10", config_maps={}, secrets={})
    assert (pods_dir / "uid-2" / "etc" / "resolv.conf").read_text() == "search node.example\nnameserver 192.0.2.77\n"
