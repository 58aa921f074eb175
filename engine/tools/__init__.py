"""Helpers behind the `crema` command's extra subcommands (Caffe's tools/extra scripts):
parse_log (training log -> CSV), plot (training curves through matplotlib) and draw (net graph as
Graphviz dot). Each module is usable on its own from Python as well."""
