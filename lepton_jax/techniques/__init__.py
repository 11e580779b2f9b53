"""The training toolbox: one module per technique, each reached by the same config keys from every trainer."""
