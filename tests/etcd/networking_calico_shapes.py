#!/usr/bin/env python3
"""Writes tests/etcd/fixtures: etcd keys and values in the exact bytes networking-calico and
Felix write, for the seed's site (three instances on compute-1, one on compute-2).

Each value is built the way networking-calico builds it, in the same key order, and encoded as it
encodes it (Python's json.dumps with its default separators); Felix's status values are Go's
encoding/json output. Where each shape comes from (projectcalico/calico, networking-calico/):
  WorkloadEndpoint  plugins/ml2/drivers/calico/endpoints.py: endpoint_name, endpoint_spec,
                    endpoint_labels, endpoint_annotations; written by datamodel_v3.put
                    (kind, apiVersion, metadata name/namespace/creationTimestamp/uid/annotations/
                    labels, then spec), key datamodel_v3._build_key
  NetworkPolicy     plugins/ml2/drivers/calico/policy.py: policy_spec, _neutron_rule_to_etcd_rule
                    (protocol numbers from neutron_lib's IP_PROTOCOL_MAP: tcp -> 6, udp -> 17,
                    icmp -> "ICMP"; releases before that map wrote "TCP": both are kept)
  Subnet            plugins/ml2/drivers/calico/subnets.py: subnet_etcd_data, key
                    datamodel_v2.key_for_subnet (/calico/dhcp/v2/<region>/subnet/<id>); the v1
                    tree datamodel_v1.SUBNET_DIR (/calico/dhcp/v1/subnet/<id>), same value
  Felix status      libcalico-go/lib/backend/model/statusreports.go (StatusReport: time, uptime,
                    first_update) and workloadendpointstatus.go ({"status": ...}, key
                    /calico/felix/v2/<region>/host/<host>/workload/<orchestrator>/<workload>/
                    endpoint/<endpoint>, names escaped by escapeName: % -> %25, / -> %2f)

Run it to regenerate; the unit tests read the files it writes (fixtures/*.json, fixtures/site.keys).
"""
import json
import os
import sys

NAMESPACE = "openstack"
CREATED = "2026-12-04T20:00:00Z"
SG_LABEL = "sg.projectcalico.org/openstack-"
SG_NAME_LABEL = "sg-name.projectcalico.org/openstack-"
PROJECT = "5f1e8c2d9a7b4c3e8f6a1b2c3d4e5f60"


def escape_dashes(text):
    return text.replace("-", "--")


def resource_key(plural, name):
    return "/calico/resources/v3/projectcalico.org/%s/%s/%s" % (plural, NAMESPACE, name)


def resource(kind, name, uid, spec, annotations=None, labels=None):
    value = {"kind": kind, "apiVersion": "projectcalico.org/v3", "metadata": {"name": name}}
    value["metadata"]["namespace"] = NAMESPACE
    value["metadata"]["creationTimestamp"] = CREATED
    value["metadata"]["uid"] = uid
    if annotations:
        value["metadata"]["annotations"] = annotations
    if labels:
        value["metadata"]["labels"] = labels
    value["spec"] = spec
    return value


def endpoint(host, device, port, mac, ip, gateway, network, groups, allowed=(), nats=()):
    """groups: [(sg id, sg name)]"""
    name = "%s-openstack-%s-%s" % (escape_dashes(host), escape_dashes(device), escape_dashes(port))
    spec = {"orchestrator": "openstack", "workload": device, "node": host, "endpoint": port,
            "interfaceName": "tap" + port[:11], "mac": mac}
    spec["ipv4Gateway"] = gateway
    spec["ipNetworks"] = [ip + "/32"] + [a + "/32" for a in allowed]
    spec["allowedIps"] = [a + "/32" for a in allowed]
    if nats:
        spec["ipNATs"] = [{"internalIP": i, "externalIP": e, "source": "openstack"} for i, e in nats]
    labels = {}
    for sg_id, sg_name in groups:
        labels[SG_LABEL + sg_id] = sg_name
        if sg_name:
            labels[SG_NAME_LABEL + sg_name] = sg_id
    labels["projectcalico.org/namespace"] = NAMESPACE
    labels["projectcalico.org/orchestrator"] = "openstack"
    labels["projectcalico.org/openstack-project-id"] = PROJECT
    labels["projectcalico.org/openstack-project-name"] = "seed"
    labels["projectcalico.org/openstack-project-parent-id"] = "default"
    annotations = {"openstack.projectcalico.org/network-id": network}
    uid = "0000%s-0000-4000-8000-%s" % (port[:4], port[-12:])
    return resource_key("workloadendpoints", name), resource(
        "WorkloadEndpoint", name, uid, spec, annotations, labels)


def rule(direction, protocol=None, ports=None, icmp=None, remote_ip=None, remote_group=None,
         ethertype="IPv4"):
    """A Neutron rule as networking-calico translates it (_neutron_rule_to_etcd_rule)."""
    out = {"action": "Allow", "ipVersion": {"IPv4": 4, "IPv6": 6}[ethertype]}
    if protocol is not None:
        out["protocol"] = protocol
    if icmp:
        out["icmp"] = icmp
    entity = {}
    if remote_group is not None:
        entity["selector"] = "has(%s)" % (SG_LABEL + remote_group)
    if remote_ip is not None:
        entity["nets"] = [remote_ip]
    if ports is not None:
        if direction == "ingress":
            out["destination"] = {"ports": ports}
        else:
            entity["ports"] = ports
    if entity:
        out["source" if direction == "ingress" else "destination"] = entity
    return out


def policy(sg_id, ingress, egress):
    name = "ossg.default." + sg_id
    spec = {"ingress": ingress, "egress": egress, "selector": "has(%s)" % (SG_LABEL + sg_id)}
    uid = "0000%s-0000-4000-8000-%s" % (sg_id[:4], sg_id[-12:])
    return resource_key("networkpolicies", name), resource("NetworkPolicy", name, uid, spec)


def subnet(network, cidr, gateway, dns=(), routes=()):
    data = {"network_id": network, "cidr": cidr,
            "host_routes": [{"destination": d, "nexthop": n} for d, n in routes],
            "gateway_ip": gateway}
    if dns:
        data["dns_servers"] = list(dns)
    return data


# The seed's site: the networks, their subnets, the groups of frame 6 and the instances.
NET_PUBLIC = "3b1f5a4e-7c2d-4e8f-9a6b-1c2d3e4f5a01"
NET_NAT = "3b1f5a4e-7c2d-4e8f-9a6b-1c2d3e4f5a02"
NET_PRIVATE = "3b1f5a4e-7c2d-4e8f-9a6b-1c2d3e4f5a03"
SUBNET_PUBLIC = "9d8c7b6a-5f4e-4d3c-8b2a-0f1e2d3c4b01"
SUBNET_NAT = "9d8c7b6a-5f4e-4d3c-8b2a-0f1e2d3c4b02"
SUBNET_PRIVATE = "9d8c7b6a-5f4e-4d3c-8b2a-0f1e2d3c4b03"
SG_WEB = "a1b2c3d4-0001-4a5b-8c6d-7e8f90a1b2c3"
SG_APP = "a1b2c3d4-0002-4a5b-8c6d-7e8f90a1b2c3"
SG_DB = "a1b2c3d4-0003-4a5b-8c6d-7e8f90a1b2c3"
PORT_WEB = "c0ffee01-0001-4b2c-9d3e-4f5a6b7c8d01"
PORT_APP = "c0ffee02-0002-4b2c-9d3e-4f5a6b7c8d02"
PORT_DB = "c0ffee03-0003-4b2c-9d3e-4f5a6b7c8d03"
PORT_REMOTE = "c0ffee04-0004-4b2c-9d3e-4f5a6b7c8d04"


def site():
    keys = {}
    keys["/calico/dhcp/v2/no-region/subnet/" + SUBNET_PUBLIC] = subnet(
        NET_PUBLIC, "203.0.113.0/24", "203.0.113.1", dns=["203.0.113.53"],
        routes=[("198.51.100.0/24", "203.0.113.1")])
    keys["/calico/dhcp/v2/no-region/subnet/" + SUBNET_NAT] = subnet(NET_NAT, "10.10.0.0/24", "10.10.0.1")
    # The private network's subnet as an older networking-calico left it: the v1 tree.
    keys["/calico/dhcp/v1/subnet/" + SUBNET_PRIVATE] = subnet(NET_PRIVATE, "10.20.0.0/24", "10.20.0.1")
    # Frame 6 of the seed: web anywhere out and 443 in; app 80 from web's address and 4545 from
    # the db group, 3333 out to web; db anything out.
    for sg_id, ingress, egress in [
        (SG_WEB,
         [rule("ingress", 6, ports=[443], remote_ip="0.0.0.0/0"),
          rule("ingress", 6, ports=[3333], remote_ip="10.10.0.5/32")],
         [rule("egress", remote_ip="0.0.0.0/0"), rule("egress", ethertype="IPv6")]),
        (SG_APP,
         [rule("ingress", 6, ports=[80], remote_ip="203.0.113.10/32"),
          rule("ingress", 6, ports=[4545], remote_group=SG_DB),
          rule("ingress", "ICMP", icmp={"type": 8, "code": 0}, remote_group=SG_APP)],
         [rule("egress", 6, ports=[3333], remote_ip="203.0.113.10/32"),
          rule("egress", 17, ports=["5000:5010"], remote_group=SG_WEB)]),
        (SG_DB, [], [rule("egress", remote_ip="0.0.0.0/0")]),
    ]:
        key, value = policy(sg_id, ingress, egress)
        keys[key] = value
    for host, device, port, mac, ip, gw, net, groups in [
        ("compute-1", "d0000001-1111-4222-8333-944455556661", PORT_WEB, "52:54:00:00:01:01",
         "203.0.113.10", "203.0.113.1", NET_PUBLIC, [(SG_WEB, "web")]),
        ("compute-1", "d0000002-1111-4222-8333-944455556662", PORT_APP, "52:54:00:00:02:01",
         "10.10.0.5", "10.10.0.1", NET_NAT, [(SG_APP, "app")]),
        ("compute-1", "d0000003-1111-4222-8333-944455556663", PORT_DB, "52:54:00:00:03:01",
         "10.20.0.7", "10.20.0.1", NET_PRIVATE, [(SG_DB, "db")]),
        ("compute-2", "d0000004-1111-4222-8333-944455556664", PORT_REMOTE, "fa:16:3e:00:04:01",
         "10.20.0.8", "10.20.0.1", NET_PRIVATE, [(SG_DB, "db")]),
    ]:
        key, value = endpoint(host, device, port, mac, ip, gw, net, groups)
        keys[key] = value
    return keys


def main():
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
    os.makedirs(here, exist_ok=True)

    def write(name, text):
        with open(os.path.join(here, name), "w") as f:
            f.write(text)

    # The whole site: one "key<TAB>value" line per key, as the unit tests and the integration
    # test load it.
    lines = ["%s\t%s\n" % (k, json.dumps(v)) for k, v in site().items()]
    write("site.keys", "".join(lines))
    # Single shapes, one file each, for the shapes the site does not show.
    write("endpoint_with_allowed_ips_and_nats.json", json.dumps(endpoint(
        "compute-1", "d0000005-1111-4222-8333-944455556665", "c0ffee05-0005-4b2c-9d3e-4f5a6b7c8d05",
        "52:54:00:00:05:01", "10.10.0.9", "10.10.0.1", NET_NAT, [(SG_APP, "")],
        allowed=["10.10.0.200"], nats=[("10.10.0.9", "198.51.100.77")])[1]))
    write("policy_default_group.json", json.dumps(policy(
        "b7e2c9a0-1d3f-4e5a-9b8c-7d6e5f4a3b2c",
        [rule("ingress", remote_group="b7e2c9a0-1d3f-4e5a-9b8c-7d6e5f4a3b2c"),
         rule("ingress", remote_group="b7e2c9a0-1d3f-4e5a-9b8c-7d6e5f4a3b2c", ethertype="IPv6")],
        [rule("egress"), rule("egress", ethertype="IPv6")])[1]))
    # Before neutron_lib's IP_PROTOCOL_MAP, protocols were written upper-cased: "TCP", "UDP".
    write("policy_protocol_names.json", json.dumps(policy(
        "b7e2c9a0-0000-4e5a-9b8c-7d6e5f4a3b2c",
        [rule("ingress", "TCP", ports=["8000:8080"], remote_ip="192.0.2.0/24"),
         rule("ingress", "UDP", ports=[53]),
         rule("ingress", "132"),
         rule("ingress", "ICMP", icmp={"type": 3})],
        [rule("egress", "ICMPv6", ethertype="IPv6")])[1]))
    write("subnet_ipv6.json", json.dumps(subnet("3b1f5a4e-7c2d-4e8f-9a6b-1c2d3e4f5a01",
                                                "2001:db8:1::/64", "2001:db8:1::1")))
    # Felix's (Go's) status values.
    write("felix_status.json", json.dumps({"time": "2026-12-04T20:00:30Z", "uptime": 30.25,
                                           "first_update": True}, separators=(",", ":")))
    write("felix_endpoint_status.json", json.dumps({"status": "up"}, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
