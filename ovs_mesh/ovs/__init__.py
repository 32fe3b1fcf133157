"""The OVS side of a node: the row and flow vocabulary, the desired state, the diff, the OpenFlow client.

  model      Flow, OvsState, FlowChange, the cookie, bridge and table numbers; re-exports
             the OVSDB row types of `ovsdb_client.rows`
  desired    Config -> OvsState: ports and the anti-spoofing pipeline, by part (fixed, per peer)
  diff       desired, observed -> row and flow changes (pure)
  openflow   ovs-ofctl: dump, bundles, trace

Nothing here imports the host package or the reconcile package above it.
"""
