"""`ovs-mesh agent`: reconcile forever (systemd service, Kubernetes DaemonSet).

loop.py wires the worker; schedule.py decides when a pass runs (reasons,
coalescing, backoff, resync); session.py holds the inventory (source, last good
topology), the node session (clients and reconnects) and log de-duplication;
watch.py notices OVS drifting away from what we installed; sdnotify.py speaks
to systemd; metrics.py serves /metrics and /healthz; install.py installs the
systemd unit; commands.py adds the commands.
"""
