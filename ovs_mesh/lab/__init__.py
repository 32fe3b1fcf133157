"""The one-machine multi-node lab (DESIGN.md section 7).

Nodes are network namespaces joined by an underlay bridge, each with its own
ovsdb-server and ovs-vswitchd (userspace datapath), configured by an
`ovs-mesh agent` per node exactly as a real node is; all agents read the lab's
one topology file, so editing it changes the lab.  Pods are made by the
reference CNI `bridge` plugin from the conflist ovs-mesh wrote.  `lab check` proves the Kubernetes
network model with real packets.
"""
