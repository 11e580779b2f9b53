"""absl-flag launchers: thin mains over the library."""
