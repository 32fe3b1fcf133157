"""Where the node inventory comes from: the config file (inotify) or the Kubernetes API
(list/watch).  Each source parses with the pure model in `topology/` and only does I/O."""
