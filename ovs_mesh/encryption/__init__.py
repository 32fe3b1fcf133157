"""What the kernel says about the tunnels' encryption, per peer (status and metrics)."""
