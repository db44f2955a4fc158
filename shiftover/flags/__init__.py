"""Feature flags that route a migration's reads and writes, stored in the control store."""
