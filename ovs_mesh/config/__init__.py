"""Reading configuration files.

  file    the only code that opens a config, `--local` or lab topology file (bounded YAML),
          `load(args)` with the command line's overrides, and `allocate`'s write-back
  items   the incremental parse of `nodes:`: only the entries that changed are checked again
"""
