"""One module per ``geoalign`` sub-command; each exposes ``add_parser(subparsers)``."""
