"""The log layer: tables, the Store (append, read, runs), dialects and migrations."""
