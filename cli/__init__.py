"""fmcli: the click command-line front end (installed as ``fmcli``; thin wrappers only)."""
