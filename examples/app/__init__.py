"""An example application on the dual-writer: an orders HTTP service and a load generator."""
