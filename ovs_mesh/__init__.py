"""ovs-mesh: an Open vSwitch overlay that gives every Kubernetes pod a routable IP."""
__version__ = "0.1.0"
