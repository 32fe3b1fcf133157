"""`ovs-mesh agent`: reconcile forever (systemd service, Kubernetes DaemonSet).

loop.py holds the worker, watch.py notices OVS drifting away from what we
installed, sdnotify.py speaks to systemd, metrics.py serves /metrics and
/healthz, install.py installs the systemd unit, cli.py adds the commands.
"""
