"""The one-machine multi-node lab (DESIGN.md section 7).

Nodes are network namespaces joined by an underlay bridge, each with its own
ovsdb-server and ovs-vswitchd (userspace datapath), configured by `ovs-mesh
apply` exactly as a real node is; pods are made by the reference CNI `bridge`
plugin from the conflist ovs-mesh wrote.  `lab check` proves the Kubernetes
network model with real packets.
"""
