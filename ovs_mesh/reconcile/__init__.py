"""One reconcile pass, and what it stands on: the plan, the client interfaces, opening a node.

  plan         Plan (every change of a pass, by executor), Result, Observed; `diff` of OVS state
  clients      the Protocols OvsdbRows, Flows, Host the Reconciler and the agent depend on
  reconciler   Reconciler: observe, plan, apply, apply_delta
  node         open_node(config): the three clients (the OVSDB client is constructed only here)
  families     which address family a flow or change is about; per-family numbers
  status_file  the last pass's record, written by apply and the agent, read by status and the lab

Kept import-light: the CLI's offline commands import `families` and `status_file`
without loading the OVSDB, OpenFlow or netlink libraries.
"""
