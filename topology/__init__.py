"""Pure cluster model: config parsing and validation, subnet allocation, mesh planning."""
from .config import ConfigError, check_nodes, parse_config  # noqa: F401
from .model import Cluster, Config, Local, Node  # noqa: F401
