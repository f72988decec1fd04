"""One module per `burstctl` sub-command; each exposes ``add_parser(subparsers)``."""
