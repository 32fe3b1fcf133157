"""The `ovs-mesh` command line.

  main          the parser and the commands (only `ovs_mesh.__main__` and the console script import it)
  status        `status`: collect and render
  packet_trace  `trace`: the flow to trace and the one-line result (pure)
"""
