"""The one-machine multi-node lab.

Nodes are network namespaces joined by an underlay bridge, each with its own
ovsdb-server and ovs-vswitchd (userspace datapath), configured by an
`ovs-mesh agent` per node exactly as a real node is; all agents read the lab's
one topology file, so editing it changes the lab.  Pods are made by the
reference CNI `bridge` plugin from the conflist ovs-mesh wrote (IPv4, IPv6 or
both: `--ip-family`; the tunnels over an IPv4 or IPv6 underlay: `--underlay`).
`lab check` proves the Kubernetes network model with real packets, per family.

Modules, by concern:
  record     the record on disk (LabState), a node (Node), LabError/LabExists
  daemons    a private ovsdb-server + ovs-vswitchd per node (also the sandbox tests' and benchmarks')
  resources  what the lab creates (namespaces, veths, OVS, processes) and release(), its one teardown
  nodes      node names and addresses; make a node (namespace, underlay, OVS)
  pods       the CNI runtime: pods from the node's conflist
  agents     one `ovs-mesh agent` per node: start, ready, stop, restart
  build      orchestration: up, down, add_node, remove_node, apply_all
  topology   the shared topology file and per-node configs
  check, probe   the connectivity matrix
  remote     `lab pods` / `lab remote-check` for real machines (the Vagrant lab)
  commands   `ovs-mesh lab ...`
"""
