"""The per-pod source guard: the nftables table (`rules`), the chained CNI plugin that
fills it when pods come and go (`cni_plugin`), and what the agent reads to keep it equal
to the pods that exist (`observe`).  Kept apart from `ovs_mesh.host` so that the plugin,
run once per pod, imports nothing heavy."""
