"""One view per tab of the console."""
